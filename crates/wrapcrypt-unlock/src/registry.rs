//! The token handlers this build knows, looked up by JSON `"type"`:
//! built in, or external executables ([`crate::external`]).

use crate::handler::TokenHandler;
use crate::systemd::SystemdHandler;

/// A set of token handlers; the first with a matching type serves a token.
pub struct Registry {
    handlers: Vec<Box<dyn TokenHandler>>,
}

impl Default for Registry {
    /// The built-in handlers: `systemd-tpm2` and `systemd-pkcs11`.
    fn default() -> Self {
        Registry {
            handlers: vec![
                Box::new(SystemdHandler::TPM2),
                Box::new(SystemdHandler::PKCS11),
            ],
        }
    }
}

impl Registry {
    /// The built-in handlers, then the external ones in `dirs`
    /// ([`crate::external`]); a built-in type is never served externally.
    pub fn with_external(dirs: &[std::path::PathBuf]) -> Self {
        let mut r = Registry::default();
        for h in crate::external::discover(dirs) {
            if !r.handles(h.kind()) {
                r.handlers.push(Box::new(h));
            }
        }
        r
    }

    /// A registry with no handler (add your own with [`Registry::with`]).
    pub fn empty() -> Self {
        Registry {
            handlers: Vec::new(),
        }
    }

    /// Adds a handler; it serves its type unless an earlier one does.
    pub fn with(mut self, h: Box<dyn TokenHandler>) -> Self {
        self.handlers.push(h);
        self
    }

    /// The handler for a token type.
    pub fn get(&self, kind: &str) -> Option<&dyn TokenHandler> {
        self.handlers
            .iter()
            .find(|h| h.kind() == kind)
            .map(|h| h.as_ref())
    }

    /// Whether any handler serves this type.
    pub fn handles(&self, kind: &str) -> bool {
        self.get(kind).is_some()
    }
}
