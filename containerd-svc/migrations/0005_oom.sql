-- State.OOMKilled: the kernel's OOM killer struck the container's cgroup in its last run.
ALTER TABLE containers ADD COLUMN oom_killed INTEGER NOT NULL DEFAULT 0;
