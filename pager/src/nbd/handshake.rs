//! The handshake phase: fixed newstyle negotiation up to NBD_OPT_GO (or NBD_OPT_EXPORT_NAME).
//!
//! Generic over the byte stream and over what exports exist ([`Catalog`]), so tests and the fuzz
//! target drive it over in-memory pipes. Option payloads are bounded, names are only looked up,
//! and anything that breaks framing closes the connection: a client can cost us at most one task
//! and [`MAX_OPTION_LEN`] bytes of buffer.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::export::ExportTable;
use super::proto::*;
use crate::error::{Error, Result};

/// What the handshake needs to know about an export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportInfo {
    /// The export's own name (the empty name resolves to a real one).
    pub name: String,
    pub size: u64,
    pub writable: bool,
}

/// The exports a handshake can choose from.
pub trait Catalog {
    fn lookup(&self, name: &str) -> Option<ExportInfo>;
    fn names(&self) -> Vec<String>;
}

impl Catalog for ExportTable {
    fn lookup(&self, name: &str) -> Option<ExportInfo> {
        self.get(name).map(|e| ExportInfo {
            name: e.name().to_string(),
            size: e.size(),
            writable: e.writable(),
        })
    }
    fn names(&self) -> Vec<String> {
        ExportTable::names(self).map(str::to_string).collect()
    }
}

/// The outcome of a successful handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub export: ExportInfo,
    pub flags: u16,
    pub structured: bool,
    /// Whether `base:allocation` was selected (block status allowed).
    pub base_allocation: bool,
}

/// Transmission flags for an export.
pub fn transmission_flags(writable: bool, structured: bool) -> u16 {
    let mut f = FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_CAN_MULTI_CONN;
    if writable {
        f |= FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES;
    } else {
        f |= FLAG_READ_ONLY;
    }
    if structured {
        f |= FLAG_SEND_DF;
    }
    f
}

fn protocol(msg: impl Into<String>) -> Error {
    Error::NbdProtocol(msg.into())
}

fn socket(source: std::io::Error) -> Error {
    Error::NbdSocket {
        during: "the handshake",
        source,
    }
}

async fn reply<S: AsyncWrite + Unpin>(
    io: &mut S,
    option: u32,
    kind: u32,
    data: &[u8],
) -> Result<()> {
    io.write_all(&option_reply(option, kind, data))
        .await
        .map_err(socket)?;
    Ok(())
}

/// Where a connection stands with TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS configured: STARTTLS is unsupported.
    Off,
    /// TLS configured but not yet started: nothing but STARTTLS (or ABORT) is answered.
    Required,
    /// Options now travel over TLS.
    Active,
}

/// How option haggling ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Transmission starts with this export.
    Go(Negotiated),
    /// The client aborted or left politely.
    Abort,
    /// STARTTLS was acknowledged: upgrade the stream, then haggle again with [`TlsMode::Active`].
    StartTls,
}

/// Runs a plaintext handshake (greeting, then options). `Ok(None)`: the client aborted.
pub async fn negotiate<S, C>(io: &mut S, catalog: &C) -> Result<Option<Negotiated>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    C: Catalog + ?Sized,
{
    let no_zeroes = greet(io).await?;
    match options(io, catalog, TlsMode::Off, no_zeroes).await? {
        Outcome::Go(n) => Ok(Some(n)),
        Outcome::Abort | Outcome::StartTls => Ok(None),
    }
}

/// Sends the greeting and reads the client's flags; returns whether it asked for no zeroes.
pub async fn greet<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) -> Result<bool> {
    io.write_all(&greeting()).await.map_err(socket)?;
    io.flush().await.map_err(socket)?;
    let client_flags = io.read_u32().await.map_err(socket)?;
    if client_flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Err(protocol(format!("unknown client flags {client_flags:#x}")));
    }
    if client_flags & FLAG_C_FIXED_NEWSTYLE == 0 {
        return Err(protocol("client does not speak fixed newstyle"));
    }
    Ok(client_flags & FLAG_C_NO_ZEROES != 0)
}

/// Haggles over options until the client picks an export, aborts, or starts TLS.
pub async fn options<S, C>(
    io: &mut S,
    catalog: &C,
    tls: TlsMode,
    no_zeroes: bool,
) -> Result<Outcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
    C: Catalog + ?Sized,
{
    let mut so_far = SoFar::default();
    loop {
        let Some((opt, data)) = read_option(io, tls).await? else {
            continue;
        };
        let step = match opt {
            OPT_EXPORT_NAME => Step::Done(so_far.export_name(io, catalog, data, no_zeroes).await?),
            OPT_ABORT => {
                // Best effort: the client may already be gone.
                let _ = reply(io, opt, REP_ACK, &[]).await;
                let _ = io.flush().await;
                return Ok(Outcome::Abort);
            }
            OPT_LIST => list(io, catalog, &data).await?,
            OPT_INFO | OPT_GO => so_far.info_or_go(io, catalog, opt, &data).await?,
            OPT_STRUCTURED_REPLY => so_far.structured_reply(io, &data).await?,
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                so_far.meta_context(io, catalog, opt, data).await?
            }
            OPT_STARTTLS => start_tls(io, tls, &data).await?,
            OPT_EXTENDED_HEADERS => {
                reply(
                    io,
                    opt,
                    REP_ERR_UNSUP,
                    b"extended headers are not supported",
                )
                .await?;
                Step::Next
            }
            _ => {
                reply(io, opt, REP_ERR_UNSUP, b"unsupported option").await?;
                Step::Next
            }
        };
        match step {
            Step::Done(outcome) => return Ok(outcome),
            Step::Next => io.flush().await.map_err(socket)?,
        }
    }
}

/// After one option: haggle on, or the handshake's outcome.
enum Step {
    Next,
    Done(Outcome),
}

/// What the options agreed on so far.
#[derive(Default)]
struct SoFar {
    structured: bool,
    /// The export the base:allocation context was last set for, and whether it was selected.
    meta: Option<(String, bool)>,
}

/// Reads the next option: its number and payload. `None` when it was answered already: a
/// payload over [`MAX_OPTION_LEN`] (skipped), or anything but STARTTLS and ABORT on a server
/// that requires TLS.
async fn read_option<S>(io: &mut S, tls: TlsMode) -> Result<Option<(u32, Vec<u8>)>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = [0u8; OPTION_HEADER_LEN];
    io.read_exact(&mut head).await.map_err(socket)?;
    let header = OptionHeader::decode(&head).map_err(|e| protocol(format!("option: {e}")))?;
    let opt = header.option;
    if header.len > MAX_OPTION_LEN {
        if opt == OPT_EXPORT_NAME {
            return Err(protocol("export name too long"));
        }
        tokio::io::copy(
            &mut (&mut *io).take(u64::from(header.len)),
            &mut tokio::io::sink(),
        )
        .await
        .map_err(socket)?;
        reply(io, opt, REP_ERR_TOO_BIG, b"option payload too large").await?;
        io.flush().await.map_err(socket)?;
        return Ok(None);
    }
    let mut data = vec![0u8; header.len as usize];
    io.read_exact(&mut data).await.map_err(socket)?;
    if tls == TlsMode::Required && !matches!(opt, OPT_STARTTLS | OPT_ABORT) {
        if opt == OPT_EXPORT_NAME {
            return Err(protocol(
                "NBD_OPT_EXPORT_NAME before STARTTLS on a TLS server",
            ));
        }
        reply(
            io,
            opt,
            REP_ERR_TLS_REQD,
            b"this server requires TLS (NBD_OPT_STARTTLS)",
        )
        .await?;
        io.flush().await.map_err(socket)?;
        return Ok(None);
    }
    Ok(Some((opt, data)))
}

/// NBD_OPT_LIST: every export's name.
async fn list<S, C>(io: &mut S, catalog: &C, data: &[u8]) -> Result<Step>
where
    S: AsyncRead + AsyncWrite + Unpin,
    C: Catalog + ?Sized,
{
    if !data.is_empty() {
        reply(io, OPT_LIST, REP_ERR_INVALID, b"NBD_OPT_LIST takes no data").await?;
    } else {
        for name in catalog.names() {
            reply(io, OPT_LIST, REP_SERVER, &server_entry(&name)).await?;
        }
        reply(io, OPT_LIST, REP_ACK, &[]).await?;
    }
    Ok(Step::Next)
}

/// NBD_OPT_STARTTLS: done (the caller wraps the socket) on a server that requires TLS.
async fn start_tls<S>(io: &mut S, tls: TlsMode, data: &[u8]) -> Result<Step>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let opt = OPT_STARTTLS;
    match tls {
        TlsMode::Off => {
            reply(
                io,
                opt,
                REP_ERR_UNSUP,
                b"TLS is not configured on this server",
            )
            .await?;
        }
        TlsMode::Active => {
            reply(io, opt, REP_ERR_INVALID, b"TLS is already active").await?;
        }
        TlsMode::Required if !data.is_empty() => {
            reply(io, opt, REP_ERR_INVALID, b"NBD_OPT_STARTTLS takes no data").await?;
        }
        TlsMode::Required => {
            reply(io, opt, REP_ACK, &[]).await?;
            io.flush().await.map_err(socket)?;
            return Ok(Step::Done(Outcome::StartTls));
        }
    }
    Ok(Step::Next)
}

impl SoFar {
    /// Whether base:allocation was selected for `name` (or for another name of `export`).
    fn base_allocation<C: Catalog + ?Sized>(
        &self,
        catalog: &C,
        name: &str,
        export: &ExportInfo,
    ) -> bool {
        matches!(&self.meta, Some((n, true)) if *n == name || lookup_same(catalog, n, export))
    }

    /// NBD_OPT_EXPORT_NAME: the old way to pick an export, answered without a reply header.
    async fn export_name<S, C>(
        &self,
        io: &mut S,
        catalog: &C,
        data: Vec<u8>,
        no_zeroes: bool,
    ) -> Result<Outcome>
    where
        S: AsyncRead + AsyncWrite + Unpin,
        C: Catalog + ?Sized,
    {
        let name = String::from_utf8(data).map_err(|_| protocol("export name not UTF-8"))?;
        let export = catalog
            .lookup(&name)
            .ok_or_else(|| protocol(format!("no export named {name:?}")))?;
        let flags = transmission_flags(export.writable, self.structured);
        let mut b = Vec::with_capacity(10 + 124);
        b.extend_from_slice(&export.size.to_be_bytes());
        b.extend_from_slice(&flags.to_be_bytes());
        if !no_zeroes {
            b.extend_from_slice(&[0u8; 124]);
        }
        io.write_all(&b).await.map_err(socket)?;
        io.flush().await.map_err(socket)?;
        let base_allocation = self.base_allocation(catalog, &name, &export);
        Ok(Outcome::Go(Negotiated {
            export,
            flags,
            structured: self.structured,
            base_allocation,
        }))
    }

    /// NBD_OPT_INFO and NBD_OPT_GO: an export's size, flags, block sizes, name and description;
    /// GO also picks it.
    async fn info_or_go<S, C>(&self, io: &mut S, catalog: &C, opt: u32, data: &[u8]) -> Result<Step>
    where
        S: AsyncRead + AsyncWrite + Unpin,
        C: Catalog + ?Sized,
    {
        let req = match InfoRequest::decode(data) {
            Ok(r) => r,
            Err(e) => {
                reply(io, opt, REP_ERR_INVALID, e.to_string().as_bytes()).await?;
                return Ok(Step::Next);
            }
        };
        let Some(export) = catalog.lookup(&req.name) else {
            reply(
                io,
                opt,
                REP_ERR_UNKNOWN,
                b"no such export (see NBD_OPT_LIST)",
            )
            .await?;
            return Ok(Step::Next);
        };
        let flags = transmission_flags(export.writable, self.structured);
        reply(io, opt, REP_INFO, &info_export(export.size, flags)).await?;
        reply(io, opt, REP_INFO, &info_block_size()).await?;
        if req.infos.contains(&INFO_NAME) {
            reply(io, opt, REP_INFO, &info_text(INFO_NAME, &export.name)).await?;
        }
        if req.infos.contains(&INFO_DESCRIPTION) {
            let d = format!("picocenter page file {}", export.name);
            reply(io, opt, REP_INFO, &info_text(INFO_DESCRIPTION, &d)).await?;
        }
        reply(io, opt, REP_ACK, &[]).await?;
        io.flush().await.map_err(socket)?;
        if opt != OPT_GO {
            return Ok(Step::Next);
        }
        let base_allocation = self.base_allocation(catalog, &req.name, &export);
        Ok(Step::Done(Outcome::Go(Negotiated {
            export,
            flags,
            structured: self.structured,
            base_allocation,
        })))
    }

    /// NBD_OPT_STRUCTURED_REPLY, once.
    async fn structured_reply<S>(&mut self, io: &mut S, data: &[u8]) -> Result<Step>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let opt = OPT_STRUCTURED_REPLY;
        if !data.is_empty() {
            reply(
                io,
                opt,
                REP_ERR_INVALID,
                b"NBD_OPT_STRUCTURED_REPLY takes no data",
            )
            .await?;
        } else if self.structured {
            reply(
                io,
                opt,
                REP_ERR_INVALID,
                b"structured replies already negotiated",
            )
            .await?;
        } else {
            self.structured = true;
            reply(io, opt, REP_ACK, &[]).await?;
        }
        Ok(Step::Next)
    }

    /// NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT: base:allocation is the one
    /// context; SET remembers whether it was selected, and for which export.
    async fn meta_context<S, C>(
        &mut self,
        io: &mut S,
        catalog: &C,
        opt: u32,
        data: Vec<u8>,
    ) -> Result<Step>
    where
        S: AsyncRead + AsyncWrite + Unpin,
        C: Catalog + ?Sized,
    {
        let set = opt == OPT_SET_META_CONTEXT;
        let req = match MetaContextRequest::decode(&data) {
            Ok(r) => r,
            Err(e) => {
                reply(io, opt, REP_ERR_INVALID, e.to_string().as_bytes()).await?;
                return Ok(Step::Next);
            }
        };
        if set && !self.structured {
            reply(
                io,
                opt,
                REP_ERR_INVALID,
                b"negotiate structured replies first",
            )
            .await?;
        } else if catalog.lookup(&req.export).is_none() {
            reply(io, opt, REP_ERR_UNKNOWN, b"no such export").await?;
        } else {
            let mut selected = false;
            let wanted = |q: &str| q == BASE_ALLOCATION || (!set && (q == "base:"));
            if !set && req.queries.is_empty() || req.queries.iter().any(|q| wanted(q)) {
                reply(
                    io,
                    opt,
                    REP_META_CONTEXT,
                    &meta_context(BASE_ALLOCATION_ID, BASE_ALLOCATION),
                )
                .await?;
                selected = true;
            }
            if set {
                self.meta = Some((req.export, selected));
            }
            reply(io, opt, REP_ACK, &[]).await?;
        }
        Ok(Step::Next)
    }
}

/// Whether meta contexts set for export `set_for` apply to `chosen` (same export by another name,
/// e.g. the empty default name).
fn lookup_same<C: Catalog + ?Sized>(catalog: &C, set_for: &str, chosen: &ExportInfo) -> bool {
    catalog
        .lookup(set_for)
        .is_some_and(|e| e.name == chosen.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct One;
    impl Catalog for One {
        fn lookup(&self, name: &str) -> Option<ExportInfo> {
            (name == "x" || name.is_empty()).then(|| ExportInfo {
                name: "x".into(),
                size: 8192,
                writable: false,
            })
        }
        fn names(&self) -> Vec<String> {
            vec!["x".into()]
        }
    }

    fn opt(option: u32, data: &[u8]) -> Vec<u8> {
        let mut b = IHAVEOPT.to_be_bytes().to_vec();
        b.extend_from_slice(&option.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        b
    }

    fn meta_req(export: &str, queries: &[&str]) -> Vec<u8> {
        let mut b = (export.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(export.as_bytes());
        b.extend_from_slice(&(queries.len() as u32).to_be_bytes());
        for q in queries {
            b.extend_from_slice(&(q.len() as u32).to_be_bytes());
            b.extend_from_slice(q.as_bytes());
        }
        b
    }

    async fn run(input: Vec<u8>) -> (Result<Option<Negotiated>>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        client.write_all(&input).await.unwrap();
        client.shutdown().await.unwrap();
        let r = negotiate(&mut server, &One).await;
        drop(server);
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        (r, out)
    }

    #[tokio::test]
    async fn go_with_structured_replies_and_base_allocation() {
        let mut input = (FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)
            .to_be_bytes()
            .to_vec();
        input.extend(opt(OPT_STRUCTURED_REPLY, &[]));
        input.extend(opt(
            OPT_SET_META_CONTEXT,
            &meta_req("x", &[BASE_ALLOCATION]),
        ));
        let mut go = 1u32.to_be_bytes().to_vec();
        go.extend_from_slice(b"x");
        go.extend_from_slice(&0u16.to_be_bytes());
        input.extend(opt(OPT_GO, &go));
        let (r, out) = run(input).await;
        let n = r.unwrap().unwrap();
        assert!(n.structured && n.base_allocation);
        assert_eq!(n.export.size, 8192);
        assert!(n.flags & FLAG_READ_ONLY != 0 && n.flags & FLAG_CAN_MULTI_CONN != 0);
        assert_eq!(&out[..8], b"NBDMAGIC");
    }

    #[tokio::test]
    async fn garbage_and_truncation_end_the_handshake_with_an_error() {
        let mut input = FLAG_C_FIXED_NEWSTYLE.to_be_bytes().to_vec();
        input.extend_from_slice(b"this is not an option header");
        assert!(run(input).await.0.is_err());
        let mut input = FLAG_C_FIXED_NEWSTYLE.to_be_bytes().to_vec();
        input.extend(&opt(OPT_GO, b"\0\0\0\x05abc")[..20]);
        assert!(run(input).await.0.is_err());
        assert!(run(0xffu32.to_be_bytes().to_vec()).await.0.is_err());
    }

    #[tokio::test]
    async fn unknown_export_and_bad_payloads_get_option_errors() {
        let mut input = FLAG_C_FIXED_NEWSTYLE.to_be_bytes().to_vec();
        let mut go = 1u32.to_be_bytes().to_vec();
        go.extend_from_slice(b"y");
        go.extend_from_slice(&0u16.to_be_bytes());
        input.extend(opt(OPT_GO, &go));
        input.extend(opt(OPT_LIST, b"x"));
        input.extend(opt(
            OPT_SET_META_CONTEXT,
            &meta_req("x", &[BASE_ALLOCATION]),
        ));
        input.extend(opt(OPT_EXTENDED_HEADERS, &[]));
        input.extend(opt(OPT_ABORT, &[]));
        let (r, out) = run(input).await;
        assert_eq!(r.unwrap(), None);
        let types: Vec<u32> = reply_types(&out[18..]);
        assert_eq!(
            types,
            vec![
                REP_ERR_UNKNOWN,
                REP_ERR_INVALID,
                REP_ERR_INVALID,
                REP_ERR_UNSUP,
                REP_ACK
            ]
        );
    }

    #[tokio::test]
    async fn a_tls_server_answers_nothing_but_starttls_in_plaintext() {
        let mut input = opt(OPT_LIST, &[]);
        let mut go = 1u32.to_be_bytes().to_vec();
        go.extend_from_slice(b"x");
        go.extend_from_slice(&0u16.to_be_bytes());
        input.extend(opt(OPT_GO, &go));
        input.extend(opt(OPT_STARTTLS, &[]));
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        client.write_all(&input).await.unwrap();
        let r = options(&mut server, &One, TlsMode::Required, true).await;
        assert_eq!(r.unwrap(), Outcome::StartTls);
        drop(server);
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        assert_eq!(
            reply_types(&out),
            vec![REP_ERR_TLS_REQD, REP_ERR_TLS_REQD, REP_ACK]
        );
        // Without TLS configured, STARTTLS is unsupported; once active, it is invalid.
        for (mode, want) in [
            (TlsMode::Off, REP_ERR_UNSUP),
            (TlsMode::Active, REP_ERR_INVALID),
        ] {
            let (mut client, mut server) = tokio::io::duplex(1 << 20);
            let mut input = opt(OPT_STARTTLS, &[]);
            input.extend(opt(OPT_ABORT, &[]));
            client.write_all(&input).await.unwrap();
            let r = options(&mut server, &One, mode, true).await;
            assert_eq!(r.unwrap(), Outcome::Abort);
            drop(server);
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.unwrap();
            assert_eq!(reply_types(&out), vec![want, REP_ACK]);
        }
    }

    fn reply_types(mut b: &[u8]) -> Vec<u32> {
        let mut out = Vec::new();
        while b.len() >= 20 {
            out.push(u32::from_be_bytes([b[12], b[13], b[14], b[15]]));
            let len = u32::from_be_bytes([b[16], b[17], b[18], b[19]]) as usize;
            b = &b[20 + len..];
        }
        out
    }
}
