//! Option groups, each flattened into the actions that use it, with
//! cryptsetup's spellings, short forms and value forms.

use clap::Args;

use super::units::parse_size;

/// Options every action takes (cryptsetup's general options).
#[derive(Args, Debug, Default, Clone)]
pub struct Global {
    /// Do not ask for confirmation.
    #[arg(short = 'q', long, global = true)]
    pub batch_mode: bool,
    /// Show more detailed messages.
    #[arg(short = 'v', long, global = true)]
    pub verbose: bool,
    /// Show debug messages.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Print a progress line every SECS seconds (also when not on a terminal).
    #[arg(long, global = true, value_name = "SECS")]
    pub progress_frequency: Option<u32>,
    /// Print progress as JSON lines (for machine processing).
    #[arg(long, global = true)]
    pub progress_json: bool,
    /// Do not take metadata locks (accepted as cryptsetup does; locks stay on).
    #[arg(long, global = true, hide = true)]
    pub disable_locks: bool,
    /// Do not use the kernel keyring (this host has no dm-crypt).
    #[arg(long, global = true, hide = true)]
    pub disable_keyring: bool,
    /// Do not run external token handlers (wrapcrypt-token-TYPE).
    #[arg(long, global = true)]
    pub disable_external_tokens: bool,
    /// Timeout for the passphrase prompt, in seconds.
    #[arg(short = 't', long, global = true, value_name = "SECS", hide = true)]
    pub timeout: Option<u64>,
    /// How often the passphrase may be retyped.
    #[arg(short = 'T', long, global = true, value_name = "NUM", hide = true)]
    pub tries: Option<u32>,
    /// Ask for a new passphrase twice (on a terminal it always is).
    #[arg(short = 'y', long, global = true, hide = true)]
    pub verify_passphrase: bool,
    /// Allow weak passphrases.
    #[arg(long, global = true, hide = true)]
    pub force_password: bool,
    /// Ask passphrases through systemd-ask-password (boot units use it).
    #[arg(long, global = true)]
    pub ask_password: bool,
}

/// The LUKS header, when it is not on the data device.
#[derive(Args, Debug, Default, Clone)]
pub struct HeaderOpt {
    /// Device or file holding a detached LUKS header.
    #[arg(long, value_name = "PATH")]
    pub header: Option<String>,
}

/// Where an existing passphrase comes from.
#[derive(Args, Debug, Default, Clone)]
pub struct KeyFileOpts {
    /// Read the passphrase from a file ("-" for standard input).
    #[arg(short = 'd', long, value_name = "FILE", allow_hyphen_values = true)]
    pub key_file: Option<String>,
    /// Read at most this many bytes from the key file.
    #[arg(short = 'l', long, value_name = "BYTES")]
    pub keyfile_size: Option<usize>,
    /// Skip this many bytes at the start of the key file.
    #[arg(long, value_name = "BYTES")]
    pub keyfile_offset: Option<u64>,
}

/// The keyslot an action works on.
#[derive(Args, Debug, Default, Clone)]
pub struct KeySlotOpt {
    /// Use only this keyslot (others are ignored).
    #[arg(short = 'S', long, value_name = "NUM")]
    pub key_slot: Option<u32>,
}

/// Where a new passphrase comes from, and its keyslot.
#[derive(Args, Debug, Default, Clone)]
pub struct NewKeyOpts {
    /// Read the new passphrase from a file.
    #[arg(long, value_name = "FILE", allow_hyphen_values = true)]
    pub new_keyfile: Option<String>,
    /// Read at most this many bytes from the new key file.
    #[arg(long, value_name = "BYTES")]
    pub new_keyfile_size: Option<usize>,
    /// Skip this many bytes at the start of the new key file.
    #[arg(long, value_name = "BYTES")]
    pub new_keyfile_offset: Option<u64>,
    /// The keyslot for the new passphrase.
    #[arg(long, value_name = "NUM")]
    pub new_key_slot: Option<u32>,
}

/// The key derivation of new keyslots.
#[derive(Args, Debug, Default, Clone)]
pub struct PbkdfOpts {
    /// PBKDF algorithm: pbkdf2, argon2i, argon2id.
    #[arg(long, value_name = "NAME")]
    pub pbkdf: Option<String>,
    /// PBKDF memory cost limit, in KiB.
    #[arg(long, value_name = "KIB")]
    pub pbkdf_memory: Option<u32>,
    /// PBKDF parallel cost.
    #[arg(long, value_name = "THREADS")]
    pub pbkdf_parallel: Option<u32>,
    /// PBKDF iterations cost (forced, no benchmark).
    #[arg(long, value_name = "NUM")]
    pub pbkdf_force_iterations: Option<u32>,
    /// PBKDF iteration time, in milliseconds.
    #[arg(short = 'i', long, value_name = "MS")]
    pub iter_time: Option<u32>,
    /// The hash of PBKDF2 and of the digest.
    #[arg(short = 'h', long, value_name = "NAME")]
    pub hash: Option<String>,
}

/// The volume key given as a file (cryptsetup's old name still works).
#[derive(Args, Debug, Default, Clone)]
pub struct VolumeKeyOpt {
    /// Read the volume key (or wrapped-key blob) from a file.
    #[arg(long, value_name = "FILE", alias = "master-key-file")]
    pub volume_key_file: Option<String>,
    /// The key size in bits.
    #[arg(short = 's', long, value_name = "BITS")]
    pub key_size: Option<usize>,
}

/// A PIN given as a file (never in argv or the environment).
#[derive(Args, Debug, Default, Clone)]
pub struct PinFileOpt {
    /// File holding the PKCS#11 user PIN or the TPM2 PIN.
    #[arg(long, value_name = "FILE")]
    pub pin_file: Option<String>,
}

/// The key provider of a wrapped-key volume.
#[derive(Args, Debug, Default, Clone)]
pub struct ProviderOpts {
    /// `custodian` (default) or a `pkcs11:` URI.
    #[arg(long, value_name = "URI")]
    pub key_provider: Option<String>,
    /// `--pin-file`.
    #[command(flatten)]
    pub pin: PinFileOpt,
}

/// A token id.
#[derive(Args, Debug, Default, Clone)]
pub struct TokenIdOpt {
    /// The token id.
    #[arg(long, value_name = "ID")]
    pub token_id: Option<u32>,
}

/// The TPM.
#[derive(Args, Debug, Default, Clone)]
pub struct Tpm2DeviceOpt {
    /// The TPM to use (a device path or a TCTI such as swtpm:port=N).
    #[arg(long, value_name = "PATH")]
    pub tpm2_device: Option<String>,
}

/// Which token to use.
#[derive(Args, Debug, Default, Clone)]
pub struct TokenSelect {
    /// `--token-id`: use only this token.
    #[command(flatten)]
    pub id: TokenIdOpt,
    /// Use only tokens of this type.
    #[arg(long, value_name = "TYPE")]
    pub token_type: Option<String>,
    /// Do not ask for a passphrase if no token unlocks the volume.
    #[arg(long)]
    pub token_only: bool,
    /// `--tpm2-device`.
    #[command(flatten)]
    pub tpm2: Tpm2DeviceOpt,
}

/// The layout of a new header.
#[derive(Args, Debug, Default, Clone)]
pub struct LayoutOpts {
    /// The cipher, e.g. aes-xts-plain64 or waes-xts-plain64.
    #[arg(short = 'c', long, value_name = "SPEC")]
    pub cipher: Option<String>,
    /// Encryption sector size in bytes.
    #[arg(long, value_name = "BYTES")]
    pub sector_size: Option<u32>,
    /// LUKS2 metadata area size (16k … 4M).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub luks2_metadata_size: Option<u64>,
    /// LUKS2 keyslots area size.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub luks2_keyslots_size: Option<u64>,
    /// Start of the data, in 512-byte sectors.
    #[arg(short = 'o', long, value_name = "SECTORS")]
    pub offset: Option<u64>,
    /// Align the data to this many 512-byte sectors (LUKS1).
    #[arg(long, value_name = "SECTORS")]
    pub align_payload: Option<u64>,
    /// The header's UUID.
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<String>,
    /// The LUKS2 label.
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
    /// The LUKS2 subsystem.
    #[arg(long, value_name = "TEXT")]
    pub subsystem: Option<String>,
}

/// The device type (`luks`, `luks1`, `luks2`).
#[derive(Args, Debug, Default, Clone)]
pub struct TypeOpt {
    /// The device type: luks, luks1, luks2.
    #[arg(short = 'M', long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
}
