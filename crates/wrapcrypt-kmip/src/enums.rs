//! The KMIP 1.2 enumerations this client uses (specification section 9.1.3.2).
//! Values a server may send that are not listed decode as `Other(code)`.

use std::fmt;

macro_rules! kmip_enum {
    ($(#[$m:meta])* $name:ident { $($var:ident = $val:literal, $text:literal;)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($var,)*
            /// A value this client has no name for.
            Other(u32),
        }

        impl $name {
            pub fn code(self) -> u32 {
                match self {
                    $($name::$var => $val,)*
                    $name::Other(v) => v,
                }
            }

            pub fn from_code(v: u32) -> $name {
                match v {
                    $($val => $name::$var,)*
                    v => $name::Other(v),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$var => f.write_str($text),)*
                    $name::Other(v) => write!(f, "{} 0x{:08X}", stringify!($name), v),
                }
            }
        }
    };
}

kmip_enum! {
    /// Operation (9.1.3.2.27).
    Operation {
        Create = 0x01, "Create";
        Register = 0x03, "Register";
        Locate = 0x08, "Locate";
        Get = 0x0A, "Get";
        GetAttributes = 0x0B, "Get Attributes";
        GetAttributeList = 0x0C, "Get Attribute List";
        AddAttribute = 0x0D, "Add Attribute";
        ModifyAttribute = 0x0E, "Modify Attribute";
        DeleteAttribute = 0x0F, "Delete Attribute";
        Activate = 0x12, "Activate";
        Revoke = 0x13, "Revoke";
        Destroy = 0x14, "Destroy";
        Query = 0x18, "Query";
        DiscoverVersions = 0x1E, "Discover Versions";
        Encrypt = 0x1F, "Encrypt";
        Decrypt = 0x20, "Decrypt";
    }
}

kmip_enum! {
    /// Result Status (9.1.3.2.28).
    ResultStatus {
        Success = 0x00, "Success";
        OperationFailed = 0x01, "Operation Failed";
        OperationPending = 0x02, "Operation Pending";
        OperationUndone = 0x03, "Operation Undone";
    }
}

kmip_enum! {
    /// Result Reason (9.1.3.2.29).
    ResultReason {
        ItemNotFound = 0x01, "Item Not Found";
        ResponseTooLarge = 0x02, "Response Too Large";
        AuthenticationNotSuccessful = 0x03, "Authentication Not Successful";
        InvalidMessage = 0x04, "Invalid Message";
        OperationNotSupported = 0x05, "Operation Not Supported";
        MissingData = 0x06, "Missing Data";
        InvalidField = 0x07, "Invalid Field";
        FeatureNotSupported = 0x08, "Feature Not Supported";
        OperationCanceledByRequester = 0x09, "Operation Canceled By Requester";
        CryptographicFailure = 0x0A, "Cryptographic Failure";
        IllegalOperation = 0x0B, "Illegal Operation";
        PermissionDenied = 0x0C, "Permission Denied";
        ObjectArchived = 0x0D, "Object Archived";
        IndexOutOfBounds = 0x0E, "Index Out Of Bounds";
        ApplicationNamespaceNotSupported = 0x0F, "Application Namespace Not Supported";
        KeyFormatTypeNotSupported = 0x10, "Key Format Type Not Supported";
        KeyCompressionTypeNotSupported = 0x11, "Key Compression Type Not Supported";
        EncodingOptionError = 0x12, "Encoding Option Error";
        KeyValueNotPresent = 0x13, "Key Value Not Present";
        AttestationRequired = 0x14, "Attestation Required";
        AttestationFailed = 0x15, "Attestation Failed";
        GeneralFailure = 0x100, "General Failure";
    }
}

kmip_enum! {
    /// Object Type (9.1.3.2.12).
    ObjectType {
        Certificate = 0x01, "Certificate";
        SymmetricKey = 0x02, "Symmetric Key";
        PublicKey = 0x03, "Public Key";
        PrivateKey = 0x04, "Private Key";
        SplitKey = 0x05, "Split Key";
        Template = 0x06, "Template";
        SecretData = 0x07, "Secret Data";
        OpaqueObject = 0x08, "Opaque Object";
        PgpKey = 0x09, "PGP Key";
    }
}

kmip_enum! {
    /// Cryptographic Algorithm (9.1.3.2.13).
    CryptographicAlgorithm {
        Des = 0x01, "DES";
        TripleDes = 0x02, "3DES";
        Aes = 0x03, "AES";
    }
}

kmip_enum! {
    /// State (9.1.3.2.17).
    State {
        PreActive = 0x01, "Pre-Active";
        Active = 0x02, "Active";
        Deactivated = 0x03, "Deactivated";
        Compromised = 0x04, "Compromised";
        Destroyed = 0x05, "Destroyed";
        DestroyedCompromised = 0x06, "Destroyed Compromised";
    }
}

kmip_enum! {
    /// Revocation Reason Code (9.1.3.2.19).
    RevocationReasonCode {
        Unspecified = 0x01, "Unspecified";
        KeyCompromise = 0x02, "Key Compromise";
        CaCompromise = 0x03, "CA Compromise";
        AffiliationChanged = 0x04, "Affiliation Changed";
        Superseded = 0x05, "Superseded";
        CessationOfOperation = 0x06, "Cessation Of Operation";
        PrivilegeWithdrawn = 0x07, "Privilege Withdrawn";
    }
}

/// Name Type Uninterpreted Text String (9.1.3.2.10).
pub const NAME_TYPE_TEXT: u32 = 0x01;
/// Key Format Type Raw (9.1.3.2.3).
pub const KEY_FORMAT_RAW: u32 = 0x01;
/// Key Format Type Transparent Symmetric Key.
pub const KEY_FORMAT_TRANSPARENT_SYMMETRIC: u32 = 0x07;

/// Cryptographic Usage Mask bits (9.1.3.3.1).
pub mod usage {
    pub const SIGN: i32 = 0x01;
    pub const VERIFY: i32 = 0x02;
    pub const ENCRYPT: i32 = 0x04;
    pub const DECRYPT: i32 = 0x08;
    pub const WRAP_KEY: i32 = 0x10;
    pub const UNWRAP_KEY: i32 = 0x20;
}

/// Block Cipher Mode GCM (9.1.3.2.14).
pub const BLOCK_CIPHER_MODE_GCM: u32 = 0x09;
/// Padding Method None (9.1.3.2.15).
pub const PADDING_NONE: u32 = 0x01;

/// Opaque Data Type: the standard defines none; 0x8000_0000 is the first
/// extension value, which PyKMIP names NONE.
pub const OPAQUE_DATA_TYPE_NONE: u32 = 0x8000_0000;
