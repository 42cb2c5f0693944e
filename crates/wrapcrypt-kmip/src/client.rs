//! A KMIP client over TLS with a client certificate (system OpenSSL).
//! One connection, one request in flight; every call is one round trip.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openssl::error::ErrorStack;
use openssl::ssl::{HandshakeError, SslConnector, SslFiletype, SslMethod, SslStream, SslVersion};
use openssl::x509::X509VerifyResult;
use wrapcrypt_secret::SecretBytes;
use zeroize::Zeroizing;

use crate::enums::{Operation, RevocationReasonCode};
use crate::error::KmipError;
use crate::message;
use crate::ops::{self, Attributes, GcmSealed, KeySpec, LocateQuery};
use crate::tag;
use crate::ttlv::{self, Ttlv};

/// Largest response accepted (a Locate of many thousands of ids fits).
pub const MAX_RESPONSE: usize = 16 << 20;

/// The client's certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct ClientIdentity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where the key manager is and how to authenticate to it.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Host name or IP address, checked against the server certificate.
    pub host: String,
    pub port: u16,
    /// PEM CA bundle that the server certificate must chain to.
    pub ca: PathBuf,
    /// `None` connects without a client certificate (a KMIP server refuses).
    pub identity: Option<ClientIdentity>,
    /// Connect, read and write timeout.
    pub timeout: Duration,
}

impl ClientConfig {
    pub fn new(host: &str, port: u16, ca: &Path, cert: &Path, key: &Path) -> ClientConfig {
        ClientConfig {
            host: host.to_owned(),
            port,
            ca: ca.to_owned(),
            identity: Some(ClientIdentity {
                cert: cert.to_owned(),
                key: key.to_owned(),
            }),
            timeout: Duration::from_secs(30),
        }
    }

    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// OpenSSL's reasons, without its numeric prefixes.
fn reasons(e: &ErrorStack) -> String {
    let r: Vec<String> = e
        .errors()
        .iter()
        .map(|e| e.reason().unwrap_or("unknown error").to_owned())
        .collect();
    if r.is_empty() {
        "no reason given".to_owned()
    } else {
        r.join("; ")
    }
}

/// A connected, authenticated KMIP session.
pub struct KmipClient {
    stream: SslStream<TcpStream>,
    addr: String,
    round_trips: u64,
}

impl std::fmt::Debug for KmipClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KmipClient({})", self.addr)
    }
}

impl KmipClient {
    /// Connects and completes the TLS handshake (TLS 1.2 or later), verifying
    /// the server certificate against `config.ca` and `config.host`.
    pub fn connect(config: &ClientConfig) -> Result<KmipClient, KmipError> {
        let addr = config.addr();
        let cfg_err = |path: &Path, e: ErrorStack| KmipError::Config {
            path: path.to_owned(),
            detail: reasons(&e),
        };
        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| KmipError::Tls {
            addr: addr.clone(),
            detail: reasons(&e),
        })?;
        b.set_min_proto_version(Some(SslVersion::TLS1_2))
            .map_err(|e| cfg_err(Path::new("TLS 1.2"), e))?;
        b.set_ca_file(&config.ca)
            .map_err(|e| cfg_err(&config.ca, e))?;
        if let Some(id) = &config.identity {
            b.set_certificate_chain_file(&id.cert)
                .map_err(|e| cfg_err(&id.cert, e))?;
            b.set_private_key_file(&id.key, SslFiletype::PEM)
                .map_err(|e| cfg_err(&id.key, e))?;
            b.check_private_key().map_err(|e| KmipError::Config {
                path: id.key.clone(),
                detail: format!("does not match {}: {}", id.cert.display(), reasons(&e)),
            })?;
        }
        let connector = b.build();

        let sock = (config.host.as_str(), config.port)
            .to_socket_addrs()
            .and_then(|mut a| {
                a.next().ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no address for host")
                })
            })
            .map_err(|source| KmipError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let tcp = TcpStream::connect_timeout(&sock, config.timeout).map_err(|source| {
            KmipError::Connect {
                addr: addr.clone(),
                source,
            }
        })?;
        let timeouts = tcp
            .set_read_timeout(Some(config.timeout))
            .and_then(|()| tcp.set_write_timeout(Some(config.timeout)))
            .and_then(|()| tcp.set_nodelay(true));
        timeouts.map_err(|source| KmipError::Connect {
            addr: addr.clone(),
            source,
        })?;

        let stream = connector
            .connect(&config.host, tcp)
            .map_err(|e| KmipError::Tls {
                addr: addr.clone(),
                detail: match e {
                    HandshakeError::SetupFailure(s) => reasons(&s),
                    HandshakeError::Failure(mid) => {
                        let verify = mid.ssl().verify_result();
                        if verify != X509VerifyResult::OK {
                            format!("server certificate: {}", verify.error_string())
                        } else if let Some(s) = mid.error().ssl_error() {
                            reasons(s)
                        } else if let Some(io) = mid.error().io_error() {
                            format!("connection closed by the server: {io}")
                        } else {
                            "connection closed by the server during the handshake".to_owned()
                        }
                    }
                    HandshakeError::WouldBlock(_) => "handshake timed out".to_owned(),
                },
            })?;
        Ok(KmipClient {
            stream,
            addr,
            round_trips: 0,
        })
    }

    /// The server's address, as connected.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends one request and returns the response payload of a successful
    /// result.
    pub fn call(&mut self, op: Operation, payload: Vec<Ttlv>) -> Result<Ttlv, KmipError> {
        self.call_version(message::PROTOCOL_VERSION, op, payload)
    }

    /// [`call`](Self::call) with a given protocol version in the header.
    pub fn call_version(
        &mut self,
        version: (i32, i32),
        op: Operation,
        payload: Vec<Ttlv>,
    ) -> Result<Ttlv, KmipError> {
        let msg = self.round_trip(message::request_version(version, op, payload), op)?;
        message::response_payload(msg, op)
    }

    /// Sends several operations in one message (one round trip) and returns
    /// one result per operation. The server stops at the first failure; the
    /// items after it are [`KmipError::Skipped`]. An item whose payload has
    /// no Unique Identifier refers to the object an earlier Create made.
    pub fn call_batch(
        &mut self,
        items: Vec<(Operation, Vec<Ttlv>)>,
    ) -> Result<Vec<Result<Ttlv, KmipError>>, KmipError> {
        let ops: Vec<Operation> = items.iter().map(|(op, _)| *op).collect();
        let first = ops.first().copied().unwrap_or(Operation::Other(0));
        let msg = self.round_trip(
            message::request_batch(message::PROTOCOL_VERSION, items),
            first,
        )?;
        message::response_payloads(msg, &ops)
    }

    /// How many request messages this connection has sent.
    pub fn round_trips(&self) -> u64 {
        self.round_trips
    }

    fn round_trip(&mut self, req: Ttlv, op: Operation) -> Result<Ttlv, KmipError> {
        let bytes = Zeroizing::new(
            req.encode()
                .map_err(|source| KmipError::Codec { op, source })?,
        );
        drop(req);
        let io = |source| KmipError::Io { op, source };
        self.round_trips += 1;
        self.stream.write_all(&bytes).map_err(io)?;
        self.stream.flush().map_err(io)?;

        let mut header = [0u8; ttlv::HEADER_LEN];
        self.stream.read_exact(&mut header).map_err(io)?;
        let total = ttlv::message_len(&header, tag::RESPONSE_MESSAGE, MAX_RESPONSE)
            .map_err(|source| KmipError::Codec { op, source })?;
        let mut buf = Zeroizing::new(vec![0u8; total]);
        buf[..ttlv::HEADER_LEN].copy_from_slice(&header);
        self.stream
            .read_exact(&mut buf[ttlv::HEADER_LEN..])
            .map_err(io)?;
        Ttlv::decode(&buf).map_err(|source| KmipError::Codec { op, source })
    }

    /// Create and Get in one round trip (Get refers to the new object
    /// through the ID Placeholder): the key's id and bytes. The key is
    /// Pre-Active, as a NEW master-key register is until it becomes CURRENT.
    pub fn create_and_get(&mut self, spec: &KeySpec) -> Result<(String, SecretBytes), KmipError> {
        let bytes = usize::try_from(spec.bits / 8).unwrap_or(0);
        let mut r = self
            .call_batch(vec![
                (Operation::Create, ops::create(spec)),
                (Operation::Get, ops::get_placeholder()),
            ])?
            .into_iter();
        let created = r.next().unwrap_or(Err(KmipError::Skipped {
            op: Operation::Create,
        }))?;
        let id = ops::unique_id(&created, Operation::Create)?;
        let got = r
            .next()
            .unwrap_or(Err(KmipError::Skipped { op: Operation::Get }))?;
        let key = ops::symmetric_key(got, &id, bytes)?;
        Ok((id, key))
    }

    /// Several AES keys of `bytes` bytes in one round trip, one result each.
    pub fn get_symmetric_keys(
        &mut self,
        ids: &[&str],
        bytes: usize,
    ) -> Result<Vec<Result<SecretBytes, KmipError>>, KmipError> {
        let items = ids
            .iter()
            .map(|id| (Operation::Get, ops::get(id)))
            .collect();
        Ok(self
            .call_batch(items)?
            .into_iter()
            .zip(ids)
            .map(|(r, id)| r.and_then(|p| ops::symmetric_key(p, id, bytes)))
            .collect())
    }

    /// Creates an AES key on the server; returns its Unique Identifier. The
    /// key is Pre-Active until [`activate`](Self::activate).
    pub fn create(&mut self, spec: &KeySpec) -> Result<String, KmipError> {
        let p = self.call(Operation::Create, ops::create(spec))?;
        ops::unique_id(&p, Operation::Create)
    }

    pub fn activate(&mut self, id: &str) -> Result<(), KmipError> {
        self.call(Operation::Activate, ops::by_id(id)).map(drop)
    }

    /// Fetches an AES key of `bytes` bytes in the clear, into locked memory.
    /// An object of another type, algorithm or length is refused.
    pub fn get_symmetric_key(&mut self, id: &str, bytes: usize) -> Result<SecretBytes, KmipError> {
        let p = self.call(Operation::Get, ops::get(id))?;
        ops::symmetric_key(p, id, bytes)
    }

    /// Stores `data` as an Opaque Object with a name and groups; returns its id.
    pub fn register_opaque(
        &mut self,
        name: &str,
        groups: &[&str],
        data: &[u8],
    ) -> Result<String, KmipError> {
        let p = self.call(
            Operation::Register,
            ops::register_opaque(name, groups, data),
        )?;
        ops::unique_id(&p, Operation::Register)
    }

    /// The bytes of an Opaque Object; another object type is refused.
    pub fn get_opaque(&mut self, id: &str) -> Result<Vec<u8>, KmipError> {
        let p = self.call(Operation::Get, ops::by_id(id))?;
        ops::opaque_data(p, id)
    }

    /// The named attributes of an object (every attribute when `names` is empty).
    pub fn get_attributes(&mut self, id: &str, names: &[&str]) -> Result<Attributes, KmipError> {
        let p = self.call(Operation::GetAttributes, ops::get_attributes(id, names))?;
        Attributes::from_payload(&p)
    }

    /// The identifiers of every object matching `query`.
    pub fn locate(&mut self, query: &LocateQuery) -> Result<Vec<String>, KmipError> {
        let p = self.call(Operation::Locate, ops::locate(query))?;
        Ok(ops::located_ids(&p))
    }

    /// Revokes an object: `KeyCompromise` makes it Compromised, any other
    /// reason makes an Active object Deactivated.
    pub fn revoke(
        &mut self,
        id: &str,
        reason: RevocationReasonCode,
        message: Option<&str>,
    ) -> Result<(), KmipError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.call(Operation::Revoke, ops::revoke(id, reason, message, now))
            .map(drop)
    }

    /// Destroys an object (a server refuses to destroy an Active one).
    pub fn destroy(&mut self, id: &str) -> Result<(), KmipError> {
        self.call(Operation::Destroy, ops::by_id(id)).map(drop)
    }

    /// Encrypts with AES-GCM inside the key manager under the Active key
    /// `id` (whose usage mask has Encrypt), binding `aad`. The 96-bit nonce
    /// is random, made here. Sent as KMIP 1.4 (see [`message::AEAD_PROTOCOL_VERSION`]).
    pub fn encrypt_gcm(
        &mut self,
        id: &str,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<GcmSealed, KmipError> {
        let mut iv = [0u8; ops::GCM_IV_LEN];
        wrapcrypt_secret::fill_random(&mut iv).map_err(|source| KmipError::Io {
            op: Operation::Encrypt,
            source,
        })?;
        let p = self.call_version(
            message::AEAD_PROTOCOL_VERSION,
            Operation::Encrypt,
            ops::encrypt_gcm(id, plaintext, &iv, aad),
        )?;
        ops::sealed(&p, &iv)
    }

    /// Decrypts what [`encrypt_gcm`](Self::encrypt_gcm) returned; a wrong
    /// key, `aad` or tag fails in the key manager.
    pub fn decrypt_gcm(
        &mut self,
        id: &str,
        sealed: &GcmSealed,
        aad: &[u8],
    ) -> Result<SecretBytes, KmipError> {
        let p = self.call_version(
            message::AEAD_PROTOCOL_VERSION,
            Operation::Decrypt,
            ops::decrypt_gcm(id, sealed, aad),
        )?;
        ops::plaintext(p)
    }
}
