//! The command line, declared with clap: cryptsetup's action names and
//! aliases, its option spellings and short forms. Options may stand before
//! or after the action (`argv::reorder` moves the action first). Each
//! action lists only its own options in `wrapcrypt ACTION --help`.

pub mod argv;
pub mod opts;
pub mod units;

use clap::{ArgAction, Args, Parser, Subcommand};

use opts::*;
use units::parse_size;

/// wrapcrypt: cryptsetup's commands for LUKS volumes, plus wrapped keys.
#[derive(Parser, Debug)]
#[command(
    name = "wrapcrypt",
    version,
    disable_help_flag = true,
    disable_version_flag = true,
    disable_help_subcommand = true,
    subcommand_required = true,
    arg_required_else_help = true,
    override_usage = "wrapcrypt ACTION [options] DEVICE [ARGS]",
    subcommand_help_heading = "Actions",
    subcommand_value_name = "ACTION"
)]
pub struct Cli {
    /// The action.
    #[command(subcommand)]
    pub action: Action,
    /// Options of every action.
    #[command(flatten)]
    pub global: Global,
    /// Print help (of the action, after one).
    #[arg(long, action = ArgAction::Help, global = true)]
    help: Option<bool>,
    /// Print the version.
    #[arg(short = 'V', long, action = ArgAction::Version)]
    version: Option<bool>,
}

/// The clap command. No action gets clap's own `-h` (that is `--hash`, as
/// in cryptsetup; each action says `disable_help_flag`); the global
/// `--help` serves them.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command()
}

/// A device argument and its detached header.
#[derive(Args, Debug, Clone)]
pub struct Dev {
    /// The LUKS device or image file.
    #[arg(value_name = "DEVICE")]
    pub device: String,
    /// Header option.
    #[command(flatten)]
    pub header: HeaderOpt,
}

/// A device, its header, and where its existing passphrase comes from.
#[derive(Args, Debug, Clone)]
pub struct Keyed {
    /// The device.
    #[command(flatten)]
    pub dev: Dev,
    /// `--key-file`, `--keyfile-size`, `--keyfile-offset`.
    #[command(flatten)]
    pub key: KeyFileOpts,
    /// `--key-slot`.
    #[command(flatten)]
    pub slot: KeySlotOpt,
}

/// The actions.
#[derive(Subcommand, Debug)]
pub enum Action {
    /// Formats a LUKS device.
    #[command(name = "luksFormat", disable_help_flag = true)]
    LuksFormat(FormatArgs),
    /// Opens a LUKS device as /dev/mapper/NAME (or tests a passphrase).
    #[command(name = "open", alias = "luksOpen", disable_help_flag = true)]
    Open(OpenArgs),
    /// Closes /dev/mapper/NAME.
    #[command(name = "close", alias = "luksClose", disable_help_flag = true)]
    Close(NameArgs),
    /// Shows the state of /dev/mapper/NAME.
    #[command(name = "status", disable_help_flag = true)]
    Status(StatusArgs),
    /// Suspends /dev/mapper/NAME: I/O blocks and the key is dropped.
    #[command(name = "luksSuspend", disable_help_flag = true)]
    Suspend(SuspendArgs),
    /// Resumes a suspended /dev/mapper/NAME (unlocks it again).
    #[command(name = "luksResume", disable_help_flag = true)]
    Resume(ResumeArgs),
    /// Opens a plain dm-crypt device (open --type plain).
    #[command(name = "plainOpen", disable_help_flag = true)]
    PlainOpen(OpenArgs),
    /// Resizes the open /dev/mapper/NAME (default: fill the device).
    #[command(name = "resize", disable_help_flag = true)]
    Resize(ResizeArgs),
    /// Re-activates the open /dev/mapper/NAME with new flags.
    #[command(name = "refresh", disable_help_flag = true)]
    Refresh(RefreshArgs),
    /// The server process of an open volume (internal).
    #[command(name = "__serve", hide = true, disable_help_flag = true)]
    Serve,
    /// Writes man pages and shell completions into a directory (internal).
    #[command(name = "__generate", hide = true, disable_help_flag = true)]
    Generate(GenerateArgs),
    /// Adds a passphrase (keyslot).
    #[command(name = "luksAddKey", disable_help_flag = true)]
    AddKey(AddKeyArgs),
    /// Removes the keyslot of a passphrase.
    #[command(name = "luksRemoveKey", disable_help_flag = true)]
    RemoveKey(RemoveKeyArgs),
    /// Changes a passphrase.
    #[command(name = "luksChangeKey", disable_help_flag = true)]
    ChangeKey(ChangeKeyArgs),
    /// Wipes a keyslot by number.
    #[command(name = "luksKillSlot", disable_help_flag = true)]
    KillSlot(KillSlotArgs),
    /// Re-derives a keyslot with new PBKDF parameters.
    #[command(name = "luksConvertKey", disable_help_flag = true)]
    ConvertKey(ConvertKeyArgs),
    /// Prints the header (cryptsetup's layout).
    #[command(name = "luksDump", disable_help_flag = true)]
    Dump(DumpArgs),
    /// Exits 0 for a LUKS device.
    #[command(name = "isLuks", disable_help_flag = true)]
    IsLuks(IsLuksArgs),
    /// Prints (or with --uuid sets) the UUID.
    #[command(name = "luksUUID", disable_help_flag = true)]
    Uuid(UuidArgs),
    /// Saves the header and keyslot areas to a file.
    #[command(name = "luksHeaderBackup", disable_help_flag = true)]
    HeaderBackup(BackupArgs),
    /// Restores the header and keyslot areas from a file.
    #[command(name = "luksHeaderRestore", disable_help_flag = true)]
    HeaderRestore(BackupArgs),
    /// Manages LUKS2 tokens: add, remove, import, export.
    #[command(name = "token", disable_help_flag = true)]
    Token(TokenArgs),
    /// Adds a keyslot a TPM2 or PKCS#11 token unlocks.
    #[command(name = "enroll", disable_help_flag = true)]
    Enroll(EnrollArgs),
    /// Sets LUKS2 label, subsystem, keyslot priority.
    #[command(name = "config", disable_help_flag = true)]
    Config(ConfigArgs),
    /// Converts LUKS1 <-> LUKS2, or aes-xts-plain64 -> waes-xts-plain64.
    #[command(name = "convert", disable_help_flag = true)]
    Convert(ConvertArgs),
    /// Repairs a damaged header copy from the good one.
    #[command(name = "repair", disable_help_flag = true)]
    Repair(RepairArgs),
    /// Reencrypts the data under a new key (offline, cryptsetup-compatible).
    #[command(name = "reencrypt", disable_help_flag = true)]
    Reencrypt(ReencryptArgs),
    /// Removes every keyslot.
    #[command(name = "erase", alias = "luksErase", disable_help_flag = true)]
    Erase(EraseArgs),
    /// Measures PBKDF and cipher speed.
    #[command(name = "benchmark", disable_help_flag = true)]
    Benchmark(BenchArgs),
    /// Master-key administration of the key custodian.
    #[command(name = "custodian", disable_help_flag = true)]
    Custodian(CustodianArgs),
    /// Checks a wrapped volume key and its verification pattern.
    #[command(name = "validate", disable_help_flag = true)]
    Validate(ValidateArgs),
    /// Re-wraps a wrapped volume key under another master key.
    #[command(name = "reencipher", disable_help_flag = true)]
    Reencipher(ReencipherArgs),
    /// Stores the verification pattern of a wrapped volume key.
    #[command(name = "setvp", disable_help_flag = true)]
    SetVp(SetVpArgs),
    /// Makes a wrapped-key blob the volume key.
    #[command(name = "setkey", disable_help_flag = true)]
    SetKey(SetKeyArgs),
    /// Lists master keys and the wrapped volumes using them.
    #[command(name = "keys", disable_help_flag = true)]
    Keys(KeysArgs),
    /// Prints a volume's /etc/crypttab line.
    #[command(name = "crypttab", disable_help_flag = true)]
    Crypttab(CrypttabArgs),
    /// Central volume inventory in the KMIP key manager.
    #[command(name = "fleet", disable_help_flag = true)]
    Fleet(FleetArgs),
}

/// luksFormat DEVICE [KEYFILE]
#[derive(Args, Debug)]
pub struct FormatArgs {
    #[command(flatten)]
    pub on: Keyed,
    /// A key file holding the passphrase.
    #[arg(value_name = "KEYFILE")]
    pub keyfile: Option<String>,
    #[command(flatten)]
    pub kind: TypeOpt,
    #[command(flatten)]
    pub layout: LayoutOpts,
    #[command(flatten)]
    pub volume_key: VolumeKeyOpt,
    #[command(flatten)]
    pub pbkdf: PbkdfOpts,
    #[command(flatten)]
    pub provider: ProviderOpts,
    /// Store the allow-discards flag in the header.
    #[arg(long)]
    pub allow_discards: bool,
}

/// open DEVICE [NAME]
#[derive(Args, Debug)]
pub struct OpenArgs {
    #[command(flatten)]
    pub on: Keyed,
    /// The name under /dev/mapper (not with --test-passphrase).
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub kind: TypeOpt,
    #[command(flatten)]
    pub tokens: TokenSelect,
    #[command(flatten)]
    pub provider: ProviderOpts,
    /// Check the passphrase only; activate nothing.
    #[arg(long)]
    pub test_passphrase: bool,
    /// Open read-only.
    #[arg(short = 'r', long)]
    pub readonly: bool,
    /// Pass discards through (written as encrypted zeros).
    #[arg(long)]
    pub allow_discards: bool,
    /// Store the activation flags (allow-discards) in the LUKS2 header.
    #[arg(long)]
    pub persistent: bool,
    /// Options of `--type plain`.
    #[command(flatten)]
    pub plain: PlainArgs,
}

/// The options of `open --type plain` (cryptsetup's plain mapping).
#[derive(Args, Debug, Default)]
pub struct PlainArgs {
    /// Plain: the cipher (default aes-cbc-essiv:sha256).
    #[arg(short = 'c', long, value_name = "SPEC")]
    pub cipher: Option<String>,
    /// Plain: the key size in bits (default 256).
    #[arg(short = 's', long, value_name = "BITS")]
    pub key_size: Option<usize>,
    /// Plain: the passphrase hash (default ripemd160; `plain`: none).
    #[arg(short = 'h', long, value_name = "NAME")]
    pub hash: Option<String>,
    /// Plain: start of the data in the device, in 512-byte sectors.
    #[arg(short = 'o', long, value_name = "SECTORS")]
    pub offset: Option<u64>,
    /// Plain: IV offset, in 512-byte sectors.
    #[arg(short = 'p', long, value_name = "SECTORS")]
    pub skip: Option<u64>,
    /// Plain: the device size in 512-byte sectors (default: to the end).
    #[arg(short = 'b', long, value_name = "SECTORS")]
    pub size: Option<u64>,
    /// Plain: the device size in bytes, with an optional unit.
    #[arg(long, value_name = "SIZE", value_parser = units::parse_device_size)]
    pub device_size: Option<u64>,
    /// Plain: the encryption sector size in bytes (default 512).
    #[arg(long, value_name = "BYTES")]
    pub sector_size: Option<u32>,
}

/// status NAME [--json]
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The name under /dev/mapper.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Print JSON (docs/json-output.md).
    #[arg(long)]
    pub json: bool,
}

/// luksSuspend NAME
#[derive(Args, Debug)]
pub struct SuspendArgs {
    /// The name under /dev/mapper.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Header option (accepted; the server knows its volume).
    #[command(flatten)]
    pub header: HeaderOpt,
}

/// luksResume NAME
#[derive(Args, Debug)]
pub struct ResumeArgs {
    /// The name under /dev/mapper.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Header option.
    #[command(flatten)]
    pub header: HeaderOpt,
    /// `--key-file`, `--keyfile-size`, `--keyfile-offset`.
    #[command(flatten)]
    pub key: KeyFileOpts,
    /// `--key-slot`.
    #[command(flatten)]
    pub slot: KeySlotOpt,
    #[command(flatten)]
    pub tokens: TokenSelect,
    #[command(flatten)]
    pub provider: ProviderOpts,
}

/// resize NAME
#[derive(Args, Debug)]
pub struct ResizeArgs {
    /// The name under /dev/mapper.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The new size in 512-byte sectors (0 or unset: fill the device).
    #[arg(short = 'b', long, value_name = "SECTORS")]
    pub size: Option<u64>,
    /// The new size in bytes, with an optional unit (S for sectors, K, M, G, T).
    #[arg(long, value_name = "SIZE", value_parser = units::parse_device_size)]
    pub device_size: Option<u64>,
    /// Header option (accepted; the server knows its volume).
    #[command(flatten)]
    pub header: HeaderOpt,
    /// `--key-file` (accepted; no key is needed, see docs/actions.md).
    #[command(flatten)]
    pub key: KeyFileOpts,
    /// `--key-slot` (accepted, as above).
    #[command(flatten)]
    pub slot: KeySlotOpt,
    /// Token options (accepted, as above).
    #[command(flatten)]
    pub tokens: TokenSelect,
}

/// refresh NAME
#[derive(Args, Debug)]
pub struct RefreshArgs {
    /// The name under /dev/mapper.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Accept discards (written as encrypted zeros); without it, only the
    /// header's persistent flag turns them on.
    #[arg(long)]
    pub allow_discards: bool,
    /// Store the flags in the LUKS2 header (replacing allow-discards there).
    #[arg(long)]
    pub persistent: bool,
    /// Must match the activation (read-only cannot change on refresh).
    #[arg(short = 'r', long)]
    pub readonly: bool,
    /// Header option.
    #[command(flatten)]
    pub header: HeaderOpt,
    /// `--key-file`, `--keyfile-size`, `--keyfile-offset`.
    #[command(flatten)]
    pub key: KeyFileOpts,
    /// `--key-slot`.
    #[command(flatten)]
    pub slot: KeySlotOpt,
    #[command(flatten)]
    pub tokens: TokenSelect,
}

/// close NAME
#[derive(Args, Debug)]
pub struct NameArgs {
    /// The name under /dev/mapper.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Defer the removal (accepted as cryptsetup does).
    #[arg(long, hide = true)]
    pub deferred: bool,
}

/// __generate DIR
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Where man pages (man8/) and completions (bash, zsh, fish) go.
    #[arg(value_name = "DIR")]
    pub dir: String,
}

/// luksAddKey DEVICE [NEW_KEYFILE]
#[derive(Args, Debug)]
pub struct AddKeyArgs {
    #[command(flatten)]
    pub on: Keyed,
    /// A key file holding the new passphrase.
    #[arg(value_name = "NEW_KEYFILE")]
    pub new_keyfile_pos: Option<String>,
    #[command(flatten)]
    pub new: NewKeyOpts,
    #[command(flatten)]
    pub volume_key: VolumeKeyOpt,
    #[command(flatten)]
    pub pbkdf: PbkdfOpts,
    /// Add a keyslot of a new key not bound to the data segment.
    #[arg(long)]
    pub unbound: bool,
}

/// luksRemoveKey DEVICE [KEYFILE]
#[derive(Args, Debug)]
pub struct RemoveKeyArgs {
    #[command(flatten)]
    pub on: Keyed,
    /// A key file holding the passphrase to remove.
    #[arg(value_name = "KEYFILE")]
    pub keyfile: Option<String>,
}

/// luksChangeKey DEVICE [NEW_KEYFILE]
#[derive(Args, Debug)]
pub struct ChangeKeyArgs {
    #[command(flatten)]
    pub on: Keyed,
    /// A key file holding the new passphrase.
    #[arg(value_name = "NEW_KEYFILE")]
    pub new_keyfile_pos: Option<String>,
    #[command(flatten)]
    pub new: NewKeyOpts,
    #[command(flatten)]
    pub pbkdf: PbkdfOpts,
}

/// luksKillSlot DEVICE SLOT [KEYFILE]
#[derive(Args, Debug)]
pub struct KillSlotArgs {
    #[command(flatten)]
    pub dev: Dev,
    /// The keyslot to wipe.
    #[arg(value_name = "SLOT")]
    pub slot_number: String,
    /// A key file holding a remaining passphrase.
    #[arg(value_name = "KEYFILE")]
    pub keyfile: Option<String>,
    #[command(flatten)]
    pub key: KeyFileOpts,
}

/// luksConvertKey DEVICE [KEYFILE]
#[derive(Args, Debug)]
pub struct ConvertKeyArgs {
    #[command(flatten)]
    pub on: Keyed,
    /// A key file holding the passphrase.
    #[arg(value_name = "KEYFILE")]
    pub keyfile: Option<String>,
    #[command(flatten)]
    pub pbkdf: PbkdfOpts,
}

/// luksDump DEVICE
#[derive(Args, Debug)]
pub struct DumpArgs {
    #[command(flatten)]
    pub on: Keyed,
    /// Print the JSON metadata.
    #[arg(long)]
    pub dump_json_metadata: bool,
    /// Print the volume key (asks for a passphrase).
    #[arg(long, alias = "dump-master-key")]
    pub dump_volume_key: bool,
    /// With --dump-volume-key and --key-slot: an unbound keyslot's key.
    #[arg(long)]
    pub unbound: bool,
    /// Print the dump as one JSON object (docs/json-output.md).
    #[arg(long, conflicts_with_all = ["dump_json_metadata", "dump_volume_key", "unbound"])]
    pub json: bool,
}

/// isLuks DEVICE
#[derive(Args, Debug)]
pub struct IsLuksArgs {
    #[command(flatten)]
    pub dev: Dev,
    #[command(flatten)]
    pub kind: TypeOpt,
}

/// luksUUID DEVICE
#[derive(Args, Debug)]
pub struct UuidArgs {
    #[command(flatten)]
    pub dev: Dev,
    /// Set this UUID.
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<String>,
}

/// luksHeaderBackup|luksHeaderRestore DEVICE --header-backup-file FILE
#[derive(Args, Debug)]
pub struct BackupArgs {
    #[command(flatten)]
    pub dev: Dev,
    /// The backup file.
    #[arg(long, value_name = "FILE")]
    pub header_backup_file: Option<String>,
}

/// token add|remove|import|export DEVICE
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// add, remove, import or export.
    #[arg(value_name = "ACTION")]
    pub sub: String,
    #[command(flatten)]
    pub dev: Dev,
    #[command(flatten)]
    pub id: TokenIdOpt,
    /// Replace the token with --token-id if it exists.
    #[arg(long)]
    pub token_replace: bool,
    /// import: read the token JSON from this file (default stdin).
    #[arg(long, value_name = "FILE")]
    pub json_file: Option<String>,
    /// add: the kernel keyring description (luks2-keyring token).
    #[arg(long, value_name = "TEXT")]
    pub key_description: Option<String>,
    #[command(flatten)]
    pub slot: KeySlotOpt,
}

/// enroll DEVICE (--tpm2-device D | --pkcs11-token-uri U)
#[derive(Args, Debug)]
pub struct EnrollArgs {
    #[command(flatten)]
    pub on: Keyed,
    #[command(flatten)]
    pub pbkdf: PbkdfOpts,
    #[command(flatten)]
    pub tpm2: Tpm2DeviceOpt,
    /// PCRs to bind to, e.g. 7+11 or 0,7.
    #[arg(long, value_name = "LIST")]
    pub tpm2_pcrs: Option<String>,
    /// Also require a PIN.
    #[arg(long)]
    pub tpm2_with_pin: bool,
    /// A PKCS#11 token with an RSA key pair.
    #[arg(long, value_name = "URI")]
    pub pkcs11_token_uri: Option<String>,
    #[command(flatten)]
    pub id: TokenIdOpt,
    #[command(flatten)]
    pub pin: PinFileOpt,
}

/// config DEVICE
#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub dev: Dev,
    /// The label.
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
    /// The subsystem.
    #[arg(long, value_name = "TEXT")]
    pub subsystem: Option<String>,
    /// Keyslot priority: ignore, normal, prefer (with --key-slot).
    #[arg(long, value_name = "PRIORITY")]
    pub priority: Option<String>,
    #[command(flatten)]
    pub slot: KeySlotOpt,
}

/// convert DEVICE --type luks1|luks2, or --cipher waes-xts-plain64
#[derive(Args, Debug)]
pub struct ConvertArgs {
    #[command(flatten)]
    pub dev: Dev,
    #[command(flatten)]
    pub kind: TypeOpt,
    /// waes-xts-plain64: move the volume key into the key provider.
    #[arg(short = 'c', long, value_name = "SPEC")]
    pub cipher: Option<String>,
    /// Where the header backup goes (wrapped-key conversion).
    #[arg(long, value_name = "FILE")]
    pub header_backup_file: Option<String>,
    #[command(flatten)]
    pub key: KeyFileOpts,
    #[command(flatten)]
    pub slot: KeySlotOpt,
    #[command(flatten)]
    pub provider: ProviderOpts,
}

/// repair DEVICE
#[derive(Args, Debug)]
pub struct RepairArgs {
    #[command(flatten)]
    pub dev: Dev,
}

/// reencrypt DEVICE
#[derive(Args, Debug)]
pub struct ReencryptArgs {
    #[command(flatten)]
    pub on: Keyed,
    /// --encrypt: activate the device as NEW_NAME after initializing and
    /// encrypt it online through that activation.
    #[arg(value_name = "NEW_NAME")]
    pub new_name: Option<String>,
    /// Write the reencryption metadata and stop (no data is moved).
    #[arg(long)]
    pub init_only: bool,
    /// Only finish a reencryption the header already records.
    #[arg(long)]
    pub resume_only: bool,
    /// Run offline on an image file or unused device (the only mode here).
    #[arg(long)]
    pub force_offline_reencrypt: bool,
    /// Largest hotzone moved at once, in bytes (K, M, G suffixes).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub hotzone_size: Option<u64>,
    /// Hotzone protection: checksum (default), journal, none.
    #[arg(long, value_name = "MODE")]
    pub resilience: Option<String>,
    /// Hash of the checksum resilience (default sha256).
    #[arg(long, value_name = "NAME")]
    pub resilience_hash: Option<String>,
    /// The new cipher.
    #[arg(short = 'c', long, value_name = "SPEC")]
    pub cipher: Option<String>,
    /// The new key size in bits.
    #[arg(short = 's', long, value_name = "BITS")]
    pub key_size: Option<usize>,
    /// The new encryption sector size in bytes.
    #[arg(long, value_name = "BYTES")]
    pub sector_size: Option<u32>,
    /// Encrypt a plain device in place (with a detached --header, or --reduce-device-size).
    #[arg(long, visible_alias = "new", short = 'N')]
    pub encrypt: bool,
    /// Decrypt the device in place (with a detached --header).
    #[arg(long)]
    pub decrypt: bool,
    /// --encrypt with the header at the start: the device loses this many bytes, half for the header (K, M, G suffixes).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub reduce_device_size: Option<u64>,
    /// UUID of the header --encrypt writes.
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<String>,
    /// Label of the header --encrypt writes.
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
    /// Subsystem of the header --encrypt writes.
    #[arg(long, value_name = "TEXT")]
    pub subsystem: Option<String>,
    /// Reencrypt an active device by its mapping name, online through its server.
    #[arg(long, value_name = "NAME")]
    pub active_name: Option<String>,
    #[command(flatten)]
    pub pbkdf: PbkdfOpts,
    /// Where a waes-xts-plain64 target's new key is generated.
    #[command(flatten)]
    pub provider: ProviderOpts,
}

/// erase DEVICE
#[derive(Args, Debug)]
pub struct EraseArgs {
    #[command(flatten)]
    pub dev: Dev,
}

/// benchmark
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Measure this cipher only.
    #[arg(short = 'c', long, value_name = "SPEC")]
    pub cipher: Option<String>,
    /// Key size in bits for --cipher.
    #[arg(short = 's', long, value_name = "BITS")]
    pub key_size: Option<usize>,
    /// Encryption sector size in bytes.
    #[arg(long, value_name = "BYTES")]
    pub sector_size: Option<u32>,
    #[command(flatten)]
    pub pbkdf: PbkdfOpts,
    /// Print JSON (docs/json-output.md).
    #[arg(long)]
    pub json: bool,
}

/// custodian init|status|load-new-master-key|set-master-key|stage-kmip-key ID
#[derive(Args, Debug)]
pub struct CustodianArgs {
    /// init, status, load-new-master-key, set-master-key or stage-kmip-key.
    #[arg(value_name = "ACTION")]
    pub sub: String,
    /// stage-kmip-key: the KMIP Unique Identifier of the key to put into NEW.
    #[arg(value_name = "ID")]
    pub id: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// validate DEVICE
#[derive(Args, Debug)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub on: Keyed,
    #[command(flatten)]
    pub provider: ProviderOpts,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// reencipher DEVICE
#[derive(Args, Debug)]
pub struct ReencipherArgs {
    #[command(flatten)]
    pub on: Keyed,
    #[command(flatten)]
    pub provider: ProviderOpts,
    #[command(flatten)]
    pub pbkdf: PbkdfOpts,
    /// Stage the new key; complete after the master-key change.
    #[arg(long)]
    pub staged: bool,
    /// Re-wrap and switch at once.
    #[arg(long)]
    pub in_place: bool,
    /// Complete a staged re-encipher.
    #[arg(long)]
    pub complete: bool,
    /// Re-wrap from CURRENT to NEW.
    #[arg(long)]
    pub to_new: bool,
    /// Re-wrap from OLD to CURRENT.
    #[arg(long)]
    pub from_old: bool,
    /// Discard an earlier staged re-encipher.
    #[arg(long)]
    pub force: bool,
}

/// setvp DEVICE
#[derive(Args, Debug)]
pub struct SetVpArgs {
    #[command(flatten)]
    pub on: Keyed,
    #[command(flatten)]
    pub provider: ProviderOpts,
}

/// setkey DEVICE --volume-key-file WKB
#[derive(Args, Debug)]
pub struct SetKeyArgs {
    #[command(flatten)]
    pub on: Keyed,
    #[command(flatten)]
    pub provider: ProviderOpts,
    /// The wrapped-key blob to set.
    #[arg(long, value_name = "FILE", alias = "master-key-file")]
    pub volume_key_file: Option<String>,
    /// Accept a key with another verification pattern.
    #[arg(long)]
    pub force: bool,
}

/// keys list [DEVICE…]
#[derive(Args, Debug)]
pub struct KeysArgs {
    /// list.
    #[arg(value_name = "ACTION")]
    pub sub: String,
    /// Devices (besides those in /etc/crypttab).
    #[arg(value_name = "DEVICE")]
    pub devices: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// crypttab DEVICE [NAME]
#[derive(Args, Debug)]
pub struct CrypttabArgs {
    #[command(flatten)]
    pub dev: Dev,
    /// The mapping name (default luks-UUID).
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub key: KeyFileOpts,
}

/// fleet register DEVICE… | fleet inventory | fleet escrow DEVICE… |
/// fleet restore-header [--uuid UUID] DEVICE | fleet rotate
#[derive(Args, Debug)]
pub struct FleetArgs {
    /// register, inventory, escrow, restore-header or rotate.
    #[arg(value_name = "ACTION")]
    pub sub: String,
    /// register, escrow: the LUKS devices; restore-header: the target.
    #[arg(value_name = "DEVICE")]
    pub devices: Vec<String>,
    /// The key-manager configuration (server, ca, cert, key, group).
    #[arg(long, value_name = "FILE")]
    pub kmip_config: Option<String>,
    /// The host name recorded / whose headers are checked (default: this host's).
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// inventory: the custodian's current master-key verification pattern.
    #[arg(long, value_name = "HEX")]
    pub current_mkvp: Option<String>,
    /// restore-header: the escrowed volume (default: the target's own UUID).
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// rotate: the host group.
    #[arg(long, value_name = "G")]
    pub group: Option<String>,
    /// rotate: the hosts file (docs/fleet.md).
    #[arg(long, value_name = "FILE")]
    pub hosts: Option<String>,
    /// rotate: the plan file (default ./fleet-rotate-GROUP.plan).
    #[arg(long, value_name = "FILE")]
    pub plan: Option<String>,
    /// rotate: continue the plan.
    #[arg(long)]
    pub resume: bool,
    /// rotate: hosts worked on at once (default 4).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// rotate: further attempts for a failing host (default 2).
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// rotate: seconds before such an attempt (default 5).
    #[arg(long, value_name = "SECS")]
    pub retry_delay: Option<u64>,
}
