//! The few transaction-coordinator requests librdkafka does not expose, sent with the
//! `kafka-protocol` crate over TCP, TLS and SASL as the sink's properties say: FindCoordinator, DescribeTransactions
//! (the producer id and epoch of an open transaction), EndTxn (re-commit a stored transaction
//! after a crash) and InitProducerId (fence a transactional id and abort what it left open).
//!
//! Versions are negotiated per connection with ApiVersions. EndTxn is capped at v4: v5 would
//! ask the coordinator for transactions v2 (KIP-890), whose epoch bump on every commit is not
//! what librdkafka's own transactions (v1) expect.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::describe_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, DescribeTransactionsRequest, EndTxnRequest, FindCoordinatorRequest,
    InitProducerIdRequest, ProducerId, RequestHeader, ResponseHeader, SaslAuthenticateRequest,
    SaslHandshakeRequest, TransactionalId,
};
use kafka_protocol::protocol::{encode_request_header_into_buffer, Decodable, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::scram::{self, Scram};
use super::security::{Mechanism, Sasl, Transport};

/// A TLS failure: a certificate problem is for the user to fix, anything else may pass.
fn tls_error(addr: &str, e: std::io::Error) -> ProtocolError {
    let text = format!("TLS handshake with {addr}: {e}");
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented) => {
            ProtocolError::Auth(text)
        }
        _ => ProtocolError::Io(text),
    }
}

/// A failure talking to the broker; the caller decides whether to retry.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Unsupported(String),
    /// The broker refused our login (wrong credentials or mechanism): retrying will not help.
    #[error("{0}")]
    Auth(String),
}

type PResult<T> = std::result::Result<T, ProtocolError>;

fn io(context: &str, e: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::Io(format!("{context}: {e}"))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One broker connection with its negotiated versions.
struct Conn {
    stream: Box<dyn Io>,
    correlation: i32,
    versions: HashMap<i16, (i16, i16)>,
}

const CLIENT_ID: &str = "weir-kafka-sink";

impl Conn {
    async fn connect(addr: &str, timeout: Duration, transport: &Transport) -> PResult<Conn> {
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| io(&format!("connecting to {addr}"), "timed out"))?
            .map_err(|e| io(&format!("connecting to {addr}"), e))?;
        tcp.set_nodelay(true).ok();
        let stream: Box<dyn Io> = match &transport.tls {
            None => Box::new(tcp),
            Some(config) => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name =
                    rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| {
                        ProtocolError::Auth(format!("{addr}: not a TLS server name: {e}"))
                    })?;
                let tls = tokio_rustls::TlsConnector::from(config.clone());
                let s = tokio::time::timeout(timeout, tls.connect(name, tcp))
                    .await
                    .map_err(|_| io(&format!("TLS handshake with {addr}"), "timed out"))?
                    .map_err(|e| tls_error(addr, e))?;
                Box::new(s)
            }
        };
        let mut c = Conn {
            stream,
            correlation: 0,
            versions: HashMap::new(),
        };
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let resp = c.send(&req, 3, timeout).await?;
        if resp.error_code != 0 {
            return Err(io(addr, format!("ApiVersions error {}", resp.error_code)));
        }
        c.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        if let Some(sasl) = &transport.sasl {
            c.authenticate(addr, sasl, timeout).await?;
        }
        Ok(c)
    }

    /// SaslHandshake v1, then the mechanism's exchange in SaslAuthenticate requests.
    async fn authenticate(&mut self, addr: &str, sasl: &Sasl, timeout: Duration) -> PResult<()> {
        let mechanism = sasl.mechanism.name();
        let v = self.version::<SaslHandshakeRequest>(1)?;
        if v < 1 {
            return Err(ProtocolError::Unsupported(format!(
                "{addr}: the broker does not support SaslHandshake v1 (Kafka 1.0 or newer is needed)"
            )));
        }
        let hs = self
            .send(
                &SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_static_str(mechanism)),
                v,
                timeout,
            )
            .await?;
        if hs.error_code != 0 {
            let offered: Vec<&str> = hs.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(ProtocolError::Auth(format!(
                "{addr}: the broker does not accept SASL mechanism {mechanism} (it offers {offered:?})"
            )));
        }
        match &sasl.mechanism {
            Mechanism::Plain => {
                let token = format!("\0{}\0{}", sasl.username, sasl.password);
                self.sasl_step(addr, mechanism, token.into_bytes(), timeout)
                    .await?;
            }
            Mechanism::Scram(hash) => {
                let (mut s, first) =
                    Scram::start(*hash, &sasl.username, &sasl.password, &scram::nonce());
                let server_first = self.sasl_step(addr, mechanism, first, timeout).await?;
                let fin = s
                    .client_final(&server_first)
                    .map_err(|e| ProtocolError::Auth(format!("{addr}: {e}")))?;
                let server_final = self.sasl_step(addr, mechanism, fin, timeout).await?;
                s.verify(&server_final)
                    .map_err(|e| ProtocolError::Auth(format!("{addr}: {e}")))?;
            }
        }
        Ok(())
    }

    async fn sasl_step(
        &mut self,
        addr: &str,
        mechanism: &str,
        bytes: Vec<u8>,
        timeout: Duration,
    ) -> PResult<Bytes> {
        let v = self.version::<SaslAuthenticateRequest>(2)?;
        let resp = self
            .send(
                &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes)),
                v,
                timeout,
            )
            .await?;
        if resp.error_code != 0 {
            return Err(ProtocolError::Auth(format!(
                "{addr}: {mechanism} authentication failed: {}",
                resp.error_message
                    .as_ref()
                    .map_or_else(|| codes::name(resp.error_code), |m| m.to_string())
            )));
        }
        Ok(resp.auth_bytes)
    }

    /// The highest version both sides speak, at most `cap`.
    fn version<R: Request>(&self, cap: i16) -> PResult<i16> {
        let (bmin, bmax) = self.versions.get(&R::KEY).copied().ok_or_else(|| {
            ProtocolError::Unsupported(format!(
                "the broker does not support {:?} (Kafka 3.0 or newer is needed)",
                ApiKey::try_from(R::KEY).ok()
            ))
        })?;
        let v = bmax.min(R::VERSIONS.max).min(cap);
        if v < bmin.max(R::VERSIONS.min) {
            return Err(ProtocolError::Unsupported(format!(
                "no common version of {:?}",
                ApiKey::try_from(R::KEY).ok()
            )));
        }
        Ok(v)
    }

    async fn send<R: Request>(
        &mut self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> PResult<R::Response> {
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut buf = BytesMut::new();
        encode_request_header_into_buffer(&mut buf, &header).map_err(|e| io("encoding", e))?;
        req.encode(&mut buf, version)
            .map_err(|e| io("encoding", e))?;
        let exchange = async {
            let mut frame = Vec::with_capacity(buf.len() + 4);
            frame.extend_from_slice(&(buf.len() as i32).to_be_bytes());
            frame.extend_from_slice(&buf);
            self.stream.write_all(&frame).await?;
            let len = self.stream.read_i32().await?;
            if !(0..=64 << 20).contains(&len) {
                return Err(std::io::Error::other(format!("bad response size {len}")));
            }
            let mut body = vec![0u8; len as usize];
            self.stream.read_exact(&mut body).await?;
            Ok(body)
        };
        let body = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| io("request", "timed out"))?
            .map_err(|e| io("request", e))?;
        let mut bytes = bytes::Bytes::from(body);
        let rh = ResponseHeader::decode(
            &mut bytes,
            <R::Response as kafka_protocol::protocol::HeaderVersion>::header_version(version),
        )
        .map_err(|e| io("decoding the response header", e))?;
        if rh.correlation_id != self.correlation {
            return Err(io("response", "correlation id mismatch"));
        }
        let resp = R::Response::decode(&mut bytes, version).map_err(|e| io("decoding", e))?;
        if bytes.has_remaining() {
            tracing::debug!(left = bytes.remaining(), "unread bytes in a Kafka response");
        }
        Ok(resp)
    }
}

/// What DescribeTransactions says about one transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub error_code: i16,
    pub state: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
}

impl From<&TransactionState> for Described {
    fn from(t: &TransactionState) -> Self {
        Described {
            error_code: t.error_code,
            state: t.transaction_state.to_string(),
            producer_id: t.producer_id.0,
            producer_epoch: t.producer_epoch,
        }
    }
}

/// Talks to the transaction coordinators of a cluster; connections are kept and re-opened after
/// an error.
pub struct TxnClient {
    bootstrap: Vec<String>,
    timeout: Duration,
    transport: Arc<Transport>,
    conns: HashMap<String, Conn>,
    coordinators: HashMap<String, String>,
}

/// Error codes the caller retries on (the coordinator moved, is loading, or is busy finishing
/// the previous step of the same transaction).
pub mod codes {
    pub const NONE: i16 = 0;
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const CONCURRENT_TRANSACTIONS: i16 = 51;
    pub const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;

    pub fn retriable(code: i16) -> bool {
        matches!(
            code,
            COORDINATOR_LOAD_IN_PROGRESS
                | COORDINATOR_NOT_AVAILABLE
                | NOT_COORDINATOR
                | CONCURRENT_TRANSACTIONS
        )
    }

    pub fn name(code: i16) -> String {
        use kafka_protocol::error::ParseResponseErrorCode;
        match code.err() {
            None => "NONE".into(),
            Some(e) => format!("{e:?} ({code})"),
        }
    }
}

impl TxnClient {
    pub fn new(bootstrap_servers: &str, timeout: Duration, transport: Arc<Transport>) -> TxnClient {
        TxnClient {
            bootstrap: bootstrap_servers
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            timeout,
            transport,
            conns: HashMap::new(),
            coordinators: HashMap::new(),
        }
    }

    /// Connects (and logs in) to the first bootstrap server that answers. A refused login,
    /// certificate or protocol fails; unreachable servers do not (the caller's own checks
    /// report those, and recovery retries them).
    pub async fn login(&mut self) -> std::result::Result<(), String> {
        for b in self.bootstrap.clone() {
            match self.conn(&b).await {
                Ok(_) => return Ok(()),
                Err(ProtocolError::Io(e)) => {
                    tracing::debug!(server = %b, error = %e, "not reachable yet")
                }
                Err(ProtocolError::Auth(e) | ProtocolError::Unsupported(e)) => return Err(e),
            }
        }
        Ok(())
    }

    async fn conn(&mut self, addr: &str) -> PResult<&mut Conn> {
        if !self.conns.contains_key(addr) {
            let c = Conn::connect(addr, self.timeout, &self.transport).await?;
            self.conns.insert(addr.to_string(), c);
        }
        Ok(self.conns.get_mut(addr).expect("inserted above"))
    }

    /// Sends `req` to `addr`, dropping the connection on any I/O error so the next try reconnects.
    async fn call<R: Request>(
        &mut self,
        addr: &str,
        req: &R,
        cap: i16,
    ) -> PResult<(R::Response, i16)> {
        let timeout = self.timeout;
        let r = async {
            let c = self.conn(addr).await?;
            let v = c.version::<R>(cap)?;
            Ok((c.send(req, v, timeout).await?, v))
        }
        .await;
        if matches!(r, Err(ProtocolError::Io(_))) {
            self.conns.remove(addr);
        }
        r
    }

    /// Forgets where a transactional id's coordinator is (after NOT_COORDINATOR or an I/O error).
    /// One request to `transactional_id`'s coordinator; returns the error code `code_of` reads
    /// from the answer. A failed call or `NOT_COORDINATOR` forgets the coordinator, so the next
    /// call looks it up again.
    async fn call_coordinator<R: Request>(
        &mut self,
        transactional_id: &str,
        req: &R,
        code_of: impl Fn(&R::Response) -> i16,
    ) -> PResult<i16> {
        let addr = self.coordinator(transactional_id).await?;
        let r = self.call(&addr, req, 4).await;
        if r.is_err() {
            self.forget(transactional_id);
        }
        let code = code_of(&r?.0);
        if code == codes::NOT_COORDINATOR {
            self.forget(transactional_id);
        }
        Ok(code)
    }

    pub fn forget(&mut self, transactional_id: &str) {
        if let Some(addr) = self.coordinators.remove(transactional_id) {
            self.conns.remove(&addr);
        }
    }

    async fn coordinator(&mut self, transactional_id: &str) -> PResult<String> {
        if let Some(a) = self.coordinators.get(transactional_id) {
            return Ok(a.clone());
        }
        let mut last = ProtocolError::Io("no bootstrap server".into());
        for b in self.bootstrap.clone() {
            // v4 batches keys in `coordinator_keys`; earlier versions take one `key`.
            let batched = match self.conn(&b).await {
                Ok(c) => c.version::<FindCoordinatorRequest>(4).map(|v| v >= 4),
                Err(e) => Err(e),
            };
            let req = match batched {
                Ok(true) => FindCoordinatorRequest::default().with_coordinator_keys(vec![
                    StrBytes::from_string(transactional_id.to_string()),
                ]),
                Ok(false) => FindCoordinatorRequest::default()
                    .with_key(StrBytes::from_string(transactional_id.to_string())),
                Err(e @ ProtocolError::Unsupported(_)) => return Err(e),
                Err(e) => {
                    self.conns.remove(&b);
                    last = e;
                    continue;
                }
            }
            .with_key_type(1);
            match self.call(&b, &req, 4).await {
                Ok((resp, v)) => {
                    let (code, host, port) = if v >= 4 {
                        match resp.coordinators.first() {
                            Some(c) => (c.error_code, c.host.to_string(), c.port),
                            None => return Err(io("FindCoordinator", "empty answer")),
                        }
                    } else {
                        (resp.error_code, resp.host.to_string(), resp.port)
                    };
                    if code != codes::NONE {
                        return Err(ProtocolError::Io(format!(
                            "FindCoordinator for {transactional_id}: {}",
                            codes::name(code)
                        )));
                    }
                    let addr = format!("{host}:{port}");
                    self.coordinators
                        .insert(transactional_id.to_string(), addr.clone());
                    return Ok(addr);
                }
                Err(e @ ProtocolError::Unsupported(_)) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The coordinator's view of a transactional id.
    pub async fn describe(&mut self, transactional_id: &str) -> PResult<Described> {
        let addr = self.coordinator(transactional_id).await?;
        let req =
            DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(
                StrBytes::from_string(transactional_id.to_string()),
            )]);
        let r = self.call(&addr, &req, 0).await;
        if r.is_err() {
            self.forget(transactional_id);
        }
        let (resp, _) = r?;
        resp.transaction_states
            .first()
            .map(Described::from)
            .ok_or_else(|| io("DescribeTransactions", "empty answer"))
    }

    /// Commits (or aborts) the transaction of `producer_id`/`producer_epoch`; returns the error
    /// code, which the caller interprets.
    pub async fn end_txn(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> PResult<i16> {
        let req = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(
                transactional_id.to_string(),
            )))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(producer_epoch)
            .with_committed(commit);
        self.call_coordinator(transactional_id, &req, |r| r.error_code)
            .await
    }

    /// InitProducerId for `transactional_id`: bumps its epoch, which fences any producer still
    /// using it and aborts its open transaction. Returns the error code.
    pub async fn init_producer_id(
        &mut self,
        transactional_id: &str,
        transaction_timeout: Duration,
    ) -> PResult<i16> {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_string(
                transactional_id.to_string(),
            ))))
            .with_transaction_timeout_ms(
                transaction_timeout.as_millis().min(i32::MAX as u128) as i32
            )
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        self.call_coordinator(transactional_id, &req, |r| r.error_code)
            .await
    }
}
