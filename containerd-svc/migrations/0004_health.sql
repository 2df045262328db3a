-- Healthchecks: Docker's State.Health object as JSON ('' when the container has none).
ALTER TABLE containers ADD COLUMN health TEXT NOT NULL DEFAULT '';
