-- Restart policies: a container its user stopped or killed is not restarted; the delay
-- of the last policy restart (Docker's back-off doubles it).
ALTER TABLE containers ADD COLUMN manually_stopped INTEGER NOT NULL DEFAULT 0;
ALTER TABLE containers ADD COLUMN restart_delay_ms INTEGER NOT NULL DEFAULT 0;
