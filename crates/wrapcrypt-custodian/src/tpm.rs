//! Sealing the storage key with a TPM 2.0 (tss-esapi).
//!
//! The parent is an ECC P-256 storage primary in the owner hierarchy,
//! re-derived from the same template at every start, so nothing persistent
//! is left in the TPM; the sealed object's public and private parts live in
//! the state directory.

use std::str::FromStr;

use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::structures::{
    EccPoint, KeyedHashScheme, Private, Public, PublicBuilder, PublicEccParametersBuilder,
    PublicKeyedHashParameters, SensitiveData, SymmetricDefinitionObject,
};
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::{Context, TctiNameConf};
use wrapcrypt_secret::SecretBytes;

use crate::seal_error::SealError;

const MAGIC: &[u8; 6] = b"WCTS\x00\x01";

fn err(tcti: &str) -> impl Fn(tss_esapi::Error) -> SealError + '_ {
    move |e| SealError::Tpm {
        tcti: tcti.to_string(),
        message: e.to_string(),
    }
}

fn context(tcti: &str) -> Result<Context, SealError> {
    let conf = TctiNameConf::from_str(tcti).map_err(err(tcti))?;
    Context::new(conf).map_err(err(tcti))
}

fn primary(ctx: &mut Context, tcti: &str) -> Result<KeyHandle, SealError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_decrypt(true)
        .with_restricted(true)
        .build()
        .map_err(err(tcti))?;
    let public = PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()
            .map_err(err(tcti))?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(err(tcti))?;
    let r = ctx
        .execute_with_nullauth_session(|c| {
            c.create_primary(Hierarchy::Owner, public, None, None, None, None)
        })
        .map_err(err(tcti))?;
    Ok(r.key_handle)
}

fn sealed_template(tcti: &str) -> Result<Public, SealError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_no_da(true)
        .with_user_with_auth(true)
        .build()
        .map_err(err(tcti))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(Default::default())
        .build()
        .map_err(err(tcti))
}

/// Seals `key` under the TPM; returns the file content to keep.
pub fn seal(tcti: &str, key: &SecretBytes) -> Result<Vec<u8>, SealError> {
    let mut ctx = context(tcti)?;
    let parent = primary(&mut ctx, tcti)?;
    let data = SensitiveData::try_from(key.expose_secret().to_vec()).map_err(err(tcti))?;
    let template = sealed_template(tcti)?;
    let created = ctx
        .execute_with_nullauth_session(|c| c.create(parent, template, None, Some(data), None, None))
        .map_err(err(tcti))?;
    let _ = ctx.flush_context(parent.into());
    let public = created.out_public.marshall().map_err(err(tcti))?;
    let private = created.out_private.value();
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&(public.len() as u16).to_be_bytes());
    out.extend_from_slice(&public);
    out.extend_from_slice(&(private.len() as u16).to_be_bytes());
    out.extend_from_slice(private);
    Ok(out)
}

/// Unseals what [`seal`] returned.
pub fn unseal(tcti: &str, blob: &[u8]) -> Result<SecretBytes, SealError> {
    let bad = || SealError::Tpm {
        tcti: tcti.to_string(),
        message: "sealed storage key file is damaged".into(),
    };
    let rest = blob.strip_prefix(&MAGIC[..]).ok_or_else(bad)?;
    let take = |b: &[u8]| -> Option<(Vec<u8>, usize)> {
        let n = u16::from_be_bytes(b.get(..2)?.try_into().ok()?) as usize;
        Some((b.get(2..2 + n)?.to_vec(), 2 + n))
    };
    let (public, n) = take(rest).ok_or_else(bad)?;
    let (private, m) = take(&rest[n..]).ok_or_else(bad)?;
    if n + m != rest.len() {
        return Err(bad());
    }
    let public = Public::unmarshall(&public).map_err(err(tcti))?;
    let private = Private::try_from(private).map_err(err(tcti))?;
    let mut ctx = context(tcti)?;
    let parent = primary(&mut ctx, tcti)?;
    let obj = ctx
        .execute_with_nullauth_session(|c| c.load(parent, private, public))
        .map_err(err(tcti))?;
    let data = ctx
        .execute_with_nullauth_session(|c| c.unseal(obj.into()))
        .map_err(err(tcti))?;
    let _ = ctx.flush_context(obj.into());
    let _ = ctx.flush_context(parent.into());
    Ok(SecretBytes::copy_from(data.value()))
}
