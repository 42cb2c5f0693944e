//! What the library asks of the person (or script) driving it. The CLI
//! answers from the terminal, key files and `--batch-mode`; a test or
//! another program answers from memory. Nothing here reads a terminal.

use wrapcrypt_secret::SecretBytes;
use wrapcrypt_volume::ExitClass;

/// A question the driver could not answer, with cryptsetup's exit class and
/// the one line to print (never a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PromptError {
    /// The exit class (aborted: wrong parameters; mismatch: permission).
    pub class: ExitClass,
    /// The line a user reads.
    pub message: String,
}

impl PromptError {
    /// A refusal with its class and line.
    pub fn new(class: ExitClass, message: impl Into<String>) -> Self {
        PromptError {
            class,
            message: message.into(),
        }
    }
}

/// Answers the library's questions. Each method returns the secret in
/// locked memory.
pub trait Prompter {
    /// The existing passphrase the user gave for this action (a key file or
    /// a prompt: the driver's choice).
    fn passphrase(&mut self, prompt: &str) -> Result<SecretBytes, PromptError>;
    /// One more line typed now (a PIN, another keyslot's passphrase). An
    /// empty secret means the user gave nothing.
    fn line(&mut self, prompt: &str) -> Result<SecretBytes, PromptError>;
    /// A new secret (asked twice on a terminal).
    fn new_secret(&mut self, prompt: &str) -> Result<SecretBytes, PromptError>;
    /// Asks to go on; `Err` when the user declines.
    fn confirm(&mut self, question: &str) -> Result<(), PromptError>;
    /// A line the user should see (stderr in the CLI).
    fn warn(&mut self, message: &str);
    /// A line of normal output (stdout in the CLI, e.g. with --verbose).
    fn info(&mut self, message: &str);
}

/// A scripted driver: passphrases and lines from a queue, confirmations
/// always yes (like `--batch-mode`), messages collected. For programs and
/// tests that drive workflows without a terminal.
#[derive(Default)]
pub struct Scripted {
    answers: std::collections::VecDeque<SecretBytes>,
    /// Every warn/info line, in order.
    pub said: Vec<String>,
}

impl Scripted {
    /// A driver that answers with these secrets in turn.
    pub fn new(answers: impl IntoIterator<Item = SecretBytes>) -> Self {
        Scripted {
            answers: answers.into_iter().collect(),
            said: Vec::new(),
        }
    }

    fn next(&mut self) -> Result<SecretBytes, PromptError> {
        self.answers
            .pop_front()
            .ok_or_else(|| PromptError::new(ExitClass::WrongParams, "Nothing to read on input."))
    }
}

impl Prompter for Scripted {
    fn passphrase(&mut self, _prompt: &str) -> Result<SecretBytes, PromptError> {
        self.next()
    }
    fn line(&mut self, _prompt: &str) -> Result<SecretBytes, PromptError> {
        Ok(self.next().unwrap_or_else(|_| SecretBytes::zeroed(0)))
    }
    fn new_secret(&mut self, _prompt: &str) -> Result<SecretBytes, PromptError> {
        self.next()
    }
    fn confirm(&mut self, _question: &str) -> Result<(), PromptError> {
        Ok(())
    }
    fn warn(&mut self, message: &str) {
        self.said.push(message.to_string());
    }
    fn info(&mut self, message: &str) {
        self.said.push(message.to_string());
    }
}
