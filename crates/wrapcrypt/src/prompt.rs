//! The one prompt module: passphrases and key files (TTY prompts without
//! echo, lines from a non-TTY stdin, key files with offset and size, `-`
//! for stdin), all read straight into locked memory, and [`CliPrompter`],
//! which answers the libraries' questions with them.

use std::io::Read;
use std::os::fd::AsRawFd;

use wrapcrypt_secret::SecretBytes;
use wrapcrypt_unlock::{PromptError, Prompter};

use crate::exit::CliError;

/// cryptsetup's default maximum key file size (8 MiB).
pub const MAX_KEYFILE: usize = 8 << 20;

/// A growable secret buffer (doubling into fresh locked memory).
struct SecretVec {
    buf: SecretBytes,
    len: usize,
}

impl SecretVec {
    fn new() -> SecretVec {
        SecretVec {
            buf: SecretBytes::zeroed(4096),
            len: 0,
        }
    }

    fn push_slice(&mut self, b: &[u8]) {
        if self.len + b.len() > self.buf.len() {
            let mut n = SecretBytes::zeroed((self.len + b.len()).next_power_of_two());
            n.expose_secret_mut()[..self.len]
                .copy_from_slice(&self.buf.expose_secret()[..self.len]);
            self.buf = n;
        }
        self.buf.expose_secret_mut()[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
    }

    fn finish(mut self) -> SecretBytes {
        let len = self.len;
        let mut out = SecretBytes::zeroed(len);
        out.expose_secret_mut()
            .copy_from_slice(&self.buf.expose_secret()[..len]);
        self.buf.truncate(0);
        out
    }
}

fn is_tty(fd: i32) -> bool {
    // SAFETY: isatty on any fd is safe.
    unsafe { libc::isatty(fd) == 1 }
}

/// Reads a key file: `offset` bytes skipped, at most `size` bytes (or up to
/// EOF, capped at [`MAX_KEYFILE`]). No newline processing, as cryptsetup.
pub fn read_keyfile(path: &str, offset: u64, size: Option<usize>) -> Result<SecretBytes, CliError> {
    log::debug!(
        "Reading key file {} (offset {offset}, {}).",
        if path == "-" {
            "from standard input"
        } else {
            path
        },
        size.map_or("to its end".to_string(), |n| format!("at most {n} bytes"))
    );
    let mut r: Box<dyn Read> = if path == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(path)
                .map_err(|e| CliError::new(1, format!("Failed to open key file {path}: {e}")))?,
        )
    };
    let mut skip = offset;
    let mut chunk = SecretBytes::zeroed(4096);
    while skip > 0 {
        let n = r.read(&mut chunk.expose_secret_mut()[..(skip.min(4096)) as usize])?;
        if n == 0 {
            return Err(CliError::usage("Cannot seek to requested keyfile offset."));
        }
        skip -= n as u64;
    }
    let limit = size.unwrap_or(MAX_KEYFILE);
    let mut out = SecretVec::new();
    loop {
        let want = (limit - out.len).min(4096);
        if want == 0 {
            break;
        }
        let n = r.read(&mut chunk.expose_secret_mut()[..want])?;
        if n == 0 {
            break;
        }
        out.push_slice(&chunk.expose_secret()[..n]);
    }
    if let Some(s) = size {
        if out.len < s {
            return Err(CliError::usage(format!(
                "Cannot read {s} bytes from key file {path}."
            )));
        }
    } else if out.len == MAX_KEYFILE {
        let n = r.read(&mut chunk.expose_secret_mut()[..1])?;
        if n > 0 {
            return Err(CliError::usage("Maximum keyfile size exceeded."));
        }
    }
    Ok(out.finish())
}

/// Reads one passphrase line from stdin (TTY: prompt, no echo).
pub fn read_line(prompt: &str) -> Result<SecretBytes, CliError> {
    let fd = std::io::stdin().as_raw_fd();
    let tty = is_tty(fd);
    let mut saved: Option<libc::termios> = None;
    if tty {
        eprint!("{prompt}");
        // SAFETY: termios calls on stdin, restored below.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut t) == 0 {
                saved = Some(t);
                let mut n = t;
                n.c_lflag &= !(libc::ECHO | libc::ECHONL);
                n.c_lflag |= libc::ICANON;
                libc::tcsetattr(fd, libc::TCSAFLUSH, &n);
            }
        }
    }
    let mut out = SecretVec::new();
    let mut byte = SecretBytes::zeroed(1);
    let mut got_any = false;
    loop {
        // Byte-wise read so later prompts see the following lines.
        // SAFETY: reads at most one byte into the locked buffer.
        let n = unsafe {
            libc::read(
                fd,
                byte.expose_secret_mut().as_mut_ptr() as *mut libc::c_void,
                1,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            restore(fd, saved);
            return Err(e.into());
        }
        if n == 0 {
            break;
        }
        got_any = true;
        if byte.expose_secret()[0] == b'\n' {
            break;
        }
        out.push_slice(byte.expose_secret());
        if out.len > MAX_KEYFILE {
            restore(fd, saved);
            return Err(CliError::usage("Maximum passphrase size exceeded."));
        }
    }
    restore(fd, saved);
    if tty {
        eprintln!();
    }
    if !got_any {
        return Err(CliError::usage("Nothing to read on input."));
    }
    Ok(out.finish())
}

fn restore(fd: i32, saved: Option<libc::termios>) {
    if let Some(t) = saved {
        // SAFETY: restoring the attributes read before.
        unsafe {
            libc::tcsetattr(fd, libc::TCSAFLUSH, &t);
        }
    }
}

/// Whether stdin is a terminal (verification prompts only then).
pub fn stdin_is_tty() -> bool {
    is_tty(std::io::stdin().as_raw_fd())
}

/// Reads a new passphrase, asking twice on a terminal when `verify`.
pub fn read_new(prompt: &str, verify: bool) -> Result<SecretBytes, CliError> {
    let p = read_line(prompt)?;
    if verify && stdin_is_tty() {
        let v = read_line("Verify passphrase: ")?;
        if !p.ct_eq(v.expose_secret()) {
            return Err(CliError::new(2, "Passphrases do not match."));
        }
    }
    Ok(p)
}

/// Asks for a YES confirmation unless in batch mode.
pub fn confirm(question: &str, batch: bool) -> Result<(), CliError> {
    if batch {
        return Ok(());
    }
    eprint!("{question}\nAre you sure? (Type 'yes' in capital letters): ");
    // Byte-wise, like passphrases, so that lines after it stay unread.
    let answer = read_line("").unwrap_or_else(|_| SecretBytes::zeroed(0));
    if answer.expose_secret() != b"YES" {
        return Err(CliError::usage("Operation aborted."));
    }
    Ok(())
}

/// A key file as the options name it: path ("-" for stdin), offset, size.
#[derive(Debug, Clone, Default)]
pub struct KeySource {
    /// The path.
    pub path: String,
    /// Bytes skipped first.
    pub offset: u64,
    /// Bytes read (default: to EOF).
    pub size: Option<usize>,
}

impl KeySource {
    /// Reads the key file.
    pub fn read(&self) -> Result<SecretBytes, CliError> {
        read_keyfile(&self.path, self.offset, self.size)
    }
}

/// Asking through `systemd-ask-password` (a boot unit has no terminal;
/// the password agents of systemd, Plymouth or a console answer instead).
#[derive(Debug, Clone, Copy, Default)]
pub struct AskPassword {
    /// `--timeout` in seconds, 0 for none (cryptsetup's default).
    pub timeout: u64,
}

/// The program that asks, found through PATH.
const ASK_PASSWORD: &str = "systemd-ask-password";

/// Whether prompts should go through systemd-ask-password without
/// `--ask-password`: systemd started this process as a unit's command
/// (`NOTIFY_SOCKET` or `INVOCATION_ID` is set and the parent is PID 1),
/// and stdin is neither a terminal nor a pipe or file that could carry a
/// passphrase (a service's /dev/null). The parent check matters: every
/// process a service starts inherits `INVOCATION_ID` (a CI runner's test
/// harness, a shell in `systemd-run`), and those must keep reading stdin.
pub fn ask_password_wanted() -> bool {
    let under_systemd =
        std::env::var_os("NOTIFY_SOCKET").is_some() || std::env::var_os("INVOCATION_ID").is_some();
    // SAFETY: getppid has no preconditions.
    if !under_systemd || unsafe { libc::getppid() } != 1 || stdin_is_tty() {
        return false;
    }
    // SAFETY: fstat on fd 0 into a zeroed struct.
    let (r, st) = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        (libc::fstat(0, &mut st), st)
    };
    // No stdin at all, or a character device that is not a terminal.
    r != 0 || st.st_mode & libc::S_IFMT == libc::S_IFCHR
}

impl AskPassword {
    /// Runs `systemd-ask-password`; the answer comes back on its stdout
    /// pipe into locked memory, never through argv or the environment.
    pub fn ask(&self, prompt: &str) -> Result<SecretBytes, CliError> {
        use std::process::{Command, Stdio};
        let message = prompt.trim_end().trim_end_matches(':');
        let mut child = Command::new(ASK_PASSWORD)
            .arg(format!("--timeout={}", self.timeout))
            .arg("--icon=drive-harddisk")
            .arg("--id=wrapcrypt")
            .arg("--")
            .arg(message)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| CliError::usage(format!("Cannot run {ASK_PASSWORD}: {e}")))?;
        let mut out = SecretVec::new();
        let mut chunk = SecretBytes::zeroed(4096);
        let mut pipe = child.stdout.take().expect("piped stdout");
        loop {
            let n = pipe.read(chunk.expose_secret_mut())?;
            if n == 0 {
                break;
            }
            out.push_slice(&chunk.expose_secret()[..n]);
            if out.len > MAX_KEYFILE {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CliError::usage("Maximum passphrase size exceeded."));
            }
        }
        // Its own message (a few bytes; read after stdout closed) goes into
        // our one line.
        let mut why = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut why);
        }
        let status = child.wait()?;
        // Exit 1, as cryptsetup's prompt timeout: not a wrong passphrase,
        // so --tries does not ask again.
        if !status.success() {
            let why = why.lines().rev().find(|l| !l.trim().is_empty());
            return Err(CliError::usage(format!(
                "No passphrase: {ASK_PASSWORD} failed ({}).",
                why.map_or_else(|| status.to_string(), |w| w.trim().to_string())
            )));
        }
        let mut p = out.finish();
        let n = p.len();
        if n > 0 && p.expose_secret()[n - 1] == b'\n' {
            p.truncate(n - 1);
        }
        Ok(p)
    }
}

/// The terminal, key files and `--batch-mode` answering the library's
/// questions.
#[derive(Debug, Default)]
pub struct CliPrompter {
    /// `--batch-mode`: confirmations are yes.
    pub batch: bool,
    /// Ask through systemd-ask-password instead of stdin.
    pub ask: Option<AskPassword>,
    /// Where the existing passphrase comes from (else a prompt).
    pub key_file: Option<KeySource>,
    /// Where a new passphrase comes from (else a verified prompt).
    pub new_key_file: Option<KeySource>,
}

fn prompt_err(e: CliError) -> PromptError {
    PromptError::new(crate::exit::class_of(e.code), e.msg)
}

impl Prompter for CliPrompter {
    fn passphrase(&mut self, prompt: &str) -> Result<SecretBytes, PromptError> {
        match (&self.key_file, &self.ask) {
            (Some(k), _) => k.read(),
            (None, Some(a)) => {
                log::debug!("Passphrase requested through systemd-ask-password.");
                a.ask(prompt)
            }
            (None, None) => {
                log::debug!("Interactive passphrase entry requested.");
                read_line(prompt)
            }
        }
        .map_err(prompt_err)
    }

    fn line(&mut self, prompt: &str) -> Result<SecretBytes, PromptError> {
        match &self.ask {
            Some(a) => a.ask(prompt),
            None => read_line(prompt),
        }
        .map_err(prompt_err)
    }

    fn new_secret(&mut self, prompt: &str) -> Result<SecretBytes, PromptError> {
        match &self.new_key_file {
            Some(k) => k.read(),
            None => read_new(prompt, true),
        }
        .map_err(prompt_err)
    }

    fn confirm(&mut self, question: &str) -> Result<(), PromptError> {
        confirm(question, self.batch).map_err(prompt_err)
    }

    fn warn(&mut self, message: &str) {
        eprintln!("{message}");
    }

    fn info(&mut self, message: &str) {
        println!("{message}");
    }
}

/// A driver that answers every later passphrase question with the new
/// secret given first, in locked memory: `reencrypt --encrypt DEVICE NAME`
/// creates the keyslot, then opens the volume and resumes it online with
/// the same passphrase instead of asking for it three times.
pub struct Remembering {
    pub inner: CliPrompter,
    given: Option<SecretBytes>,
}

impl Remembering {
    pub fn new(inner: CliPrompter) -> Self {
        Remembering { inner, given: None }
    }
}

impl Prompter for Remembering {
    fn passphrase(&mut self, prompt: &str) -> Result<SecretBytes, PromptError> {
        match &self.given {
            Some(s) => Ok(SecretBytes::copy_from(s.expose_secret())),
            None => self.inner.passphrase(prompt),
        }
    }

    fn line(&mut self, prompt: &str) -> Result<SecretBytes, PromptError> {
        self.inner.line(prompt)
    }

    fn new_secret(&mut self, prompt: &str) -> Result<SecretBytes, PromptError> {
        let s = self.inner.new_secret(prompt)?;
        self.given = Some(SecretBytes::copy_from(s.expose_secret()));
        Ok(s)
    }

    fn confirm(&mut self, question: &str) -> Result<(), PromptError> {
        self.inner.confirm(question)
    }

    fn warn(&mut self, message: &str) {
        self.inner.warn(message)
    }

    fn info(&mut self, message: &str) {
        self.inner.info(message)
    }
}
