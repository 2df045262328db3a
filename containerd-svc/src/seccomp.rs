//! The default seccomp profile, with Docker's semantics: an allow-list. A syscall not
//! named here fails with EPERM; the dangerous ones are allowed only to a container that
//! holds the capability they need (`--cap-add`, `--privileged` drops the profile); a
//! `clone` creating namespaces is refused without CAP_SYS_ADMIN and `clone3` then
//! answers ENOSYS, so C libraries fall back to `clone` (whose flags the filter can see).
//! io_uring is not on the list (it bypasses the filter for the work it queues).

use serde_json::{Value, json};

/// Allowed to every container (names unknown to the host's libseccomp are skipped by
/// the runtime: they cannot be called there anyway).
const ALLOWED: &[&str] = &[
    // Files and directories.
    "access",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "close",
    "close_range",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "flock",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futimesat",
    "getcwd",
    "getdents",
    "getdents64",
    "lchown",
    "lchown32",
    "link",
    "linkat",
    "_llseek",
    "lseek",
    "lstat",
    "lstat64",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pread64",
    "preadv",
    "preadv2",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "rename",
    "renameat",
    "renameat2",
    "rmdir",
    "sendfile",
    "sendfile64",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "tee",
    "truncate",
    "truncate64",
    "umask",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vmsplice",
    "write",
    "writev",
    "name_to_handle_at",
    // Extended attributes.
    "fgetxattr",
    "flistxattr",
    "fremovexattr",
    "fsetxattr",
    "getxattr",
    "getxattrat",
    "lgetxattr",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "lremovexattr",
    "lsetxattr",
    "removexattr",
    "removexattrat",
    "setxattr",
    "setxattrat",
    // Watching files.
    "fanotify_mark",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    // Mount listing (reading only: mounting needs CAP_SYS_ADMIN below).
    "listmount",
    "statmount",
    // Memory.
    "brk",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mremap",
    "mseal",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "remap_file_pages",
    // Processes, threads, credentials and limits.
    "capget",
    "capset",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "fork",
    "getcpu",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "get_thread_area",
    "gettid",
    "getuid",
    "getuid32",
    "ioprio_get",
    "ioprio_set",
    "prctl",
    "prlimit64",
    "process_mrelease",
    "restart_syscall",
    "rseq",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "ugetrlimit",
    "uname",
    "vfork",
    "wait4",
    "waitid",
    "waitpid",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "pidfd_open",
    "pidfd_send_signal",
    "sysinfo",
    "times",
    "uretprobe",
    "riscv_hwprobe",
    // Signals.
    "alarm",
    "kill",
    "pause",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "tgkill",
    "tkill",
    // Time and timers.
    "adjtimex",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "getitimer",
    "gettimeofday",
    "nanosleep",
    "setitimer",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    // Waiting: futexes, polling, events.
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "_newselect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "pselect6",
    "pselect6_time64",
    "select",
    // Asynchronous I/O (not io_uring).
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    // IPC.
    "ipc",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "pipe",
    "pipe2",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    // Sockets (socket(2) itself is below: some families are refused).
    "accept",
    "accept4",
    "bind",
    "connect",
    "getpeername",
    "getsockname",
    "getsockopt",
    "listen",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "send",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setsockopt",
    "shutdown",
    "socketcall",
    "socketpair",
    // Devices and the rest.
    "ioctl",
    "getrandom",
    "cachestat",
    // Tracing a process of the container itself: the kernel (>= 4.8) checks it belongs
    // to the same user and namespace.
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
];

/// Allowed only to a container holding the capability.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "lsm_get_self_attr",
            "lsm_list_modules",
            "lsm_set_self_attr",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &["kcmp", "pidfd_getfd", "process_madvise"],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// The namespace flags of clone(2): CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
/// NEWPID, NEWNET (0x7E020000).
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// errno values the profile answers with.
const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// Address families socket(2) refuses: AF_ALG (38, the kernel's crypto API) and
/// AF_VSOCK (40, the hypervisor's sockets).
const AF_ALG: u64 = 38;
const AF_VSOCK: u64 = 40;

/// personality(2) values a program may ask for: the Linux one, with or without
/// address randomisation turned off (UNAME26, 0x0020000 | 8), and the query (0xffffffff).
const PERSONALITIES: &[u64] = &[0, 8, 0x20000, 0x20008, 0xffff_ffff];

fn allow(names: &[&str]) -> Value {
    json!({"names": names, "action": "SCMP_ACT_ALLOW"})
}

fn allow_if(name: &str, index: u32, op: &str, value: u64) -> Value {
    json!({"names": [name], "action": "SCMP_ACT_ALLOW",
        "args": [{"index": index, "value": value, "op": op}]})
}

/// The profile for a container holding `caps` (names like `CAP_SYS_ADMIN`), in the OCI
/// form libcontainer loads.
pub fn default_profile(caps: &[&str]) -> Value {
    let has = |c: &str| caps.contains(&c);
    let mut rules = vec![allow(ALLOWED)];
    rules.push(allow_if("socket", 0, "SCMP_CMP_LT", AF_ALG));
    rules.push(allow_if("socket", 0, "SCMP_CMP_EQ", AF_ALG + 1));
    rules.push(allow_if("socket", 0, "SCMP_CMP_GT", AF_VSOCK));
    for p in PERSONALITIES {
        rules.push(allow_if("personality", 0, "SCMP_CMP_EQ", *p));
    }
    match std::env::consts::ARCH {
        "x86_64" | "x86" => rules.push(allow(&["arch_prctl", "modify_ldt"])),
        "aarch64" | "arm" => rules.push(allow(&[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ])),
        _ => {}
    }
    for (cap, names) in BY_CAPABILITY {
        if has(cap) {
            rules.push(allow(names));
        }
    }
    if !has("CAP_SYS_ADMIN") {
        // clone without namespace flags. libcontainer's MASKED_EQ takes the mask in
        // `valueTwo` and compares the masked argument with `value`.
        rules.push(json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 0, "valueTwo": CLONE_NAMESPACE_FLAGS,
                "op": "SCMP_CMP_MASKED_EQ"}]}));
        // clone3 hides its flags in memory the filter cannot read: ENOSYS makes the C
        // library fall back to clone (EPERM would not).
        rules.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": architectures(),
        "syscalls": rules,
    })
}

/// The host's architecture and those its 64-bit kernel also runs.
fn architectures() -> Value {
    match std::env::consts::ARCH {
        "x86_64" => json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
        "aarch64" => json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]),
        _ => json!([]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_allowed(p: &Value) -> Vec<String> {
        p["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none())
            .flat_map(|r| r["names"].as_array().unwrap().clone())
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn an_allow_list_with_capability_conditions() {
        let p = default_profile(&["CAP_CHOWN", "CAP_KILL"]);
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(p["defaultErrnoRet"], 1);
        let allowed = names_allowed(&p);
        for must in ["read", "execve", "fork", "wait4", "openat", "socketpair"] {
            assert!(allowed.iter().any(|n| n == must), "{must}");
        }
        for never in [
            "mount",
            "unshare",
            "setns",
            "io_uring_setup",
            "io_uring_enter",
            "kexec_load",
            "bpf",
        ] {
            assert!(!allowed.iter().any(|n| n == never), "{never}");
        }
        let clone3 = p["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["names"][0] == "clone3")
            .unwrap();
        assert_eq!(clone3["errnoRet"], 38);
        // With CAP_SYS_ADMIN: mount, unshare and clone are allowed; clone3 too.
        let p = default_profile(&["CAP_SYS_ADMIN"]);
        let allowed = names_allowed(&p);
        for must in ["mount", "unshare", "clone", "clone3", "setns"] {
            assert!(allowed.iter().any(|n| n == must), "{must}");
        }
        assert!(!p.to_string().contains("\"errnoRet\":38"));
    }

    #[test]
    fn no_name_is_both_always_allowed_and_capability_bound() {
        for (_, names) in BY_CAPABILITY {
            for n in *names {
                assert!(!ALLOWED.contains(n), "{n}");
            }
        }
    }
}
