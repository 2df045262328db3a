//! The container state machine (the subset Berth uses today).

use crate::Error;

/// A container's lifecycle state, as Docker names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Created,
    Running,
    /// Frozen by `docker pause`.
    Paused,
    /// Exited, waiting for its restart policy's next start.
    Restarting,
    Exited,
    Removing,
    Dead,
}

impl State {
    /// Docker's name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Paused => "paused",
            State::Restarting => "restarting",
            State::Exited => "exited",
            State::Removing => "removing",
            State::Dead => "dead",
        }
    }

    /// Parses a stored state; unknown text is treated as dead.
    pub fn parse(s: &str) -> State {
        match s {
            "created" => State::Created,
            "running" => State::Running,
            "paused" => State::Paused,
            "restarting" => State::Restarting,
            "exited" => State::Exited,
            "removing" => State::Removing,
            _ => State::Dead,
        }
    }

    /// Start is allowed from created and exited; running is "already running".
    pub fn check_start(self) -> Result<bool, Error> {
        match self {
            State::Created | State::Exited | State::Restarting => Ok(true),
            State::Running => Ok(false),
            // Docker's wording.
            State::Paused => Err(Error::FailedPrecondition(
                "cannot start a paused container, try unpause instead".into(),
            )),
            State::Removing | State::Dead => Err(Error::FailedPrecondition(format!(
                "cannot start a container in state {}",
                self.as_str()
            ))),
        }
    }

    /// The state after the init exited: only a running container can exit.
    pub fn on_exit(self) -> Option<State> {
        (self == State::Running).then_some(State::Exited)
    }

    /// Remove needs force for a running container.
    pub fn check_remove(self, force: bool, name: &str) -> Result<(), Error> {
        if self == State::Paused && !force {
            return Err(Error::FailedPrecondition(format!(
                "cannot remove container \"/{name}\": container is paused and must be unpaused first"
            )));
        }
        if matches!(self, State::Running | State::Restarting) && !force {
            // Docker's wording.
            return Err(Error::FailedPrecondition(format!(
                "cannot remove container \"/{name}\": container is {}: stop the container before removing or force remove",
                self.as_str()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        for s in [
            State::Created,
            State::Running,
            State::Paused,
            State::Restarting,
            State::Exited,
            State::Removing,
            State::Dead,
        ] {
            assert_eq!(State::parse(s.as_str()), s);
        }
        assert!(State::Created.check_start().unwrap());
        assert!(State::Exited.check_start().unwrap());
        assert!(!State::Running.check_start().unwrap());
        assert!(State::Removing.check_start().is_err());
        assert_eq!(State::Running.on_exit(), Some(State::Exited));
        assert_eq!(State::Created.on_exit(), None);
        assert_eq!(State::Exited.on_exit(), None);
        let e = State::Running.check_remove(false, "foo").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot remove container \"/foo\": container is running")
        );
        assert!(State::Running.check_remove(true, "foo").is_ok());
        assert!(State::Exited.check_remove(false, "foo").is_ok());
    }
}
