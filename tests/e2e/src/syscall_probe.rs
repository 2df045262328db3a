//! A tiny static x86-64 program that makes one system call and exits with its errno (0
//! when it succeeded), written as machine code: the test image has no compiler or
//! libc, and a seccomp profile is best checked from inside a real container.

/// ELF64 for `syscall(nr, arg0, 0, 0)`; exit code = -result (the errno) or 0.
pub fn program(nr: u32, arg0: u32) -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56;
    let mut code = Vec::new();
    code.push(0xb8); // mov eax, nr
    code.extend_from_slice(&nr.to_le_bytes());
    code.push(0xbf); // mov edi, arg0
    code.extend_from_slice(&arg0.to_le_bytes());
    code.extend_from_slice(&[0x31, 0xf6]); // xor esi, esi
    code.extend_from_slice(&[0x31, 0xd2]); // xor edx, edx
    code.extend_from_slice(&[0x0f, 0x05]); // syscall
    code.extend_from_slice(&[0xf7, 0xd8]); // neg eax
    code.extend_from_slice(&[0x89, 0xc7]); // mov edi, eax
    code.extend_from_slice(&[0xb8, 60, 0, 0, 0]); // mov eax, 60 (exit)
    code.extend_from_slice(&[0x0f, 0x05]); // syscall
    let total = HEADERS + code.len() as u64;

    let mut elf = Vec::new();
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&(BASE + HEADERS).to_le_bytes()); // entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // program headers
    elf.extend_from_slice(&0u64.to_le_bytes()); // no sections
    elf.extend_from_slice(&0u32.to_le_bytes());
    elf.extend_from_slice(&64u16.to_le_bytes());
    elf.extend_from_slice(&56u16.to_le_bytes());
    elf.extend_from_slice(&1u16.to_le_bytes());
    elf.extend_from_slice(&[0; 6]);
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R+X
    elf.extend_from_slice(&0u64.to_le_bytes());
    elf.extend_from_slice(&BASE.to_le_bytes());
    elf.extend_from_slice(&BASE.to_le_bytes());
    elf.extend_from_slice(&total.to_le_bytes());
    elf.extend_from_slice(&total.to_le_bytes());
    elf.extend_from_slice(&0x1000u64.to_le_bytes());
    elf.extend_from_slice(&code);
    elf
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_probe_runs_and_reports_errno() {
        let dir = tempfile::tempdir().unwrap();
        let run = |nr, arg| {
            let p = dir.path().join(format!("p{nr}"));
            std::fs::write(&p, program(nr, arg)).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::process::Command::new(&p).status().unwrap().code()
        };
        // getpid succeeds: 0 after the negation of a positive pid is not 0, so use
        // close(-1): EBADF (9).
        assert_eq!(run(3, u32::MAX), Some(9));
        // sched_yield succeeds: 0.
        assert_eq!(run(24, 0), Some(0));
    }
}
