//! Authoritative DNS for the tenant zone.
//!
//! Clients reach a tenant by name (`web.pico.test`) and must land on whichever
//! worker hosts it right now; a sleeping tenant has to be woken before the
//! client connects. Answering DNS ourselves lets the hub do both at resolution
//! time: the lookup may wait for the wake-up, and tiny TTLs keep resolvers from
//! caching a placement that changes when tenants move or sleep.
//!
//! The module only speaks DNS: what a name resolves to comes from [`Names`],
//! which the hub implements from its registry.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hickory_server::net::runtime::Time;
use hickory_server::net::NetError;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, LowerQuery, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::proto::ProtoError;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tracing::{debug, info, warn};

/// What the zone's names resolve to; the hub implements it from its registry.
pub trait Names: Send + Sync + 'static {
    /// `label` is the tenant name: the lowercased first label of NAME.ZONE
    /// (only names exactly one label below the zone apex are tenants).
    /// May wait (the hub wakes a sleeping tenant and answers once it is
    /// reachable, or after a bound).
    fn resolve(&self, label: &str) -> impl Future<Output = Resolution> + Send;
}

/// The outcome of looking up a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The tenant exists and is reachable at this address.
    Address(IpAddr),
    /// No tenant has this name.
    Unknown,
}

/// The zone this server is authoritative for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// Zone apex, e.g. `pico.test.` (a missing trailing dot is added).
    pub origin: String,
    /// This server's own name, the target of the apex NS record.
    pub ns_name: String,
    /// What `ns_name` resolves to (A or AAAA by family).
    pub ns_address: IpAddr,
    /// SOA RNAME, the zone's contact mailbox in name form.
    pub hostmaster: String,
    /// TTL of tenant answers; keep it to a few seconds since placements move.
    pub ttl_s: u32,
}

impl Zone {
    /// A zone with the default `ns.<origin>`, `hostmaster.<origin>` and a 1 s TTL.
    pub fn new(origin: &str, ns_address: IpAddr) -> Self {
        let origin = with_trailing_dot(origin);
        Self {
            ns_name: format!("ns.{origin}"),
            hostmaster: format!("hostmaster.{origin}"),
            origin,
            ns_address,
            ttl_s: DEFAULT_TENANT_TTL_S,
        }
    }
}

/// Why the DNS server could not start or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("invalid domain name {name:?} in the zone configuration")]
    InvalidName {
        name: String,
        #[source]
        source: ProtoError,
    },
    #[error("DNS server stopped: {0}")]
    Server(#[from] NetError),
}

const DEFAULT_TENANT_TTL_S: u32 = 1;
/// SOA MINIMUM: how long resolvers may cache "no such tenant"; short so a
/// freshly created tenant becomes reachable quickly.
const NEGATIVE_TTL_S: u32 = 5;
const SOA_REFRESH_S: i32 = 3600;
const SOA_RETRY_S: i32 = 600;
const SOA_EXPIRE_S: i32 = 86400;
/// TTL of the zone's own NS and server address records, which rarely change.
const INFRASTRUCTURE_TTL_S: u32 = 300;
/// Largest UDP answer we offer over EDNS (the DNS flag day 2020 value).
const MAX_UDP_PAYLOAD: u16 = 1232;
/// Idle TCP connections are closed after this long. hickory starts the clock
/// at each request, so it must exceed the hub's bound on waking a tenant.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;
/// Tries at finding a port free for both UDP and TCP when asked for port 0.
const BIND_ATTEMPTS: u32 = 8;

/// Binds UDP and TCP on the same address; with port 0, on the same free port.
pub async fn bind(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    if addr.port() != 0 {
        return Ok((UdpSocket::bind(addr).await?, TcpListener::bind(addr).await?));
    }
    let mut attempt = 1;
    loop {
        let udp = UdpSocket::bind(addr).await?;
        // The kernel picked a UDP port; its TCP twin may belong to someone else.
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error) if error.kind() == io::ErrorKind::AddrInUse && attempt < BIND_ATTEMPTS => {
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Answers queries for `zone` on both sockets until `shutdown` completes.
pub async fn serve(
    zone: Zone,
    names: Arc<impl Names>,
    udp: UdpSocket,
    tcp: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DnsError> {
    let zone_data = ZoneData::new(&zone, serial_now())?;
    info!(
        zone = %zone_data.origin,
        udp = ?udp.local_addr().ok(),
        tcp = ?tcp.local_addr().ok(),
        "serving DNS"
    );
    let mut server = Server::new(ZoneHandler {
        zone: zone_data,
        names,
    });
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
    tokio::select! {
        stopped = server.block_until_done() => return stopped.map_err(DnsError::from),
        () = shutdown => {}
    }
    server.shutdown_gracefully().await?;
    Ok(())
}

/// SOA serial: the start time, so a restarted hub never goes backwards (in
/// RFC 1982 serial arithmetic, where wrapping at 2^32 is expected).
fn serial_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |since_epoch| since_epoch.as_secs() as u32)
}

fn with_trailing_dot(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

fn absolute_name(text: &str) -> Result<Name, DnsError> {
    let mut name = Name::from_ascii(text).map_err(|source| DnsError::InvalidName {
        name: text.to_owned(),
        source,
    })?;
    name.set_fqdn(true);
    Ok(name)
}

/// The zone's fixed records, built once from [`Zone`].
struct ZoneData {
    origin: Name,
    soa: Record,
    /// Apex SOA and NS, and the server's own address record.
    fixed: Vec<Record>,
    ns_address: Record,
    tenant_ttl_s: u32,
}

/// Where a queried name sits relative to the zone.
enum Owner {
    OutOfZone,
    /// Owns one of the zone's fixed records (apex, server name).
    Fixed,
    /// Exists only as an ancestor of a fixed name, e.g. `b.ZONE` for `ns.b.ZONE`.
    EmptyNonTerminal,
    Tenant(String),
    Nonexistent,
}

impl ZoneData {
    fn new(zone: &Zone, serial: u32) -> Result<Self, DnsError> {
        let origin = absolute_name(&zone.origin)?;
        let ns_name = absolute_name(&zone.ns_name)?;
        let hostmaster = absolute_name(&zone.hostmaster)?;
        let soa_data = SOA::new(
            ns_name.clone(),
            hostmaster,
            serial,
            SOA_REFRESH_S,
            SOA_RETRY_S,
            SOA_EXPIRE_S,
            NEGATIVE_TTL_S,
        );
        // RFC 2308: the SOA's own TTL caps negative caching too.
        let soa = Record::from_rdata(origin.clone(), NEGATIVE_TTL_S, RData::SOA(soa_data));
        let ns = Record::from_rdata(
            origin.clone(),
            INFRASTRUCTURE_TTL_S,
            RData::NS(NS(ns_name.clone())),
        );
        let ns_address = address_record(ns_name, INFRASTRUCTURE_TTL_S, zone.ns_address);
        Ok(Self {
            fixed: vec![soa.clone(), ns, ns_address.clone()],
            origin,
            soa,
            ns_address,
            tenant_ttl_s: zone.ttl_s,
        })
    }

    fn owner_of(&self, name: &Name) -> Owner {
        if !self.origin.zone_of(name) {
            Owner::OutOfZone
        } else if self.fixed.iter().any(|record| record.name == *name) {
            Owner::Fixed
        } else if self.fixed.iter().any(|record| name.zone_of(&record.name)) {
            Owner::EmptyNonTerminal
        } else if name.num_labels() == self.origin.num_labels() + 1 {
            Owner::Tenant(tenant_label(name))
        } else {
            Owner::Nonexistent
        }
    }

    fn fixed_answer(&self, name: &Name, query_type: RecordType) -> Answer {
        let answers: Vec<Record> = self
            .fixed
            .iter()
            .filter(|record| record.name == *name && type_matches(query_type, record))
            .cloned()
            .collect();
        if answers.is_empty() {
            return Answer::no_data(&self.soa);
        }
        // Glue, so resolvers need no second query to reach the server.
        let additionals = if answers.iter().any(|r| r.record_type() == RecordType::NS) {
            vec![self.ns_address.clone()]
        } else {
            Vec::new()
        };
        Answer::records(answers, additionals)
    }

    fn tenant_answer(&self, name: &Name, query_type: RecordType, found: Resolution) -> Answer {
        let Resolution::Address(address) = found else {
            return Answer::nx_domain(&self.soa);
        };
        let record = address_record(name.clone(), self.tenant_ttl_s, address);
        if type_matches(query_type, &record) {
            Answer::records(vec![record], Vec::new())
        } else {
            Answer::no_data(&self.soa)
        }
    }
}

/// The wire's first label of `name`, lowercased, as the registry knows tenants.
fn tenant_label(name: &Name) -> String {
    name.iter()
        .next()
        .map(|label| String::from_utf8_lossy(label).to_ascii_lowercase())
        .unwrap_or_default()
}

fn type_matches(query_type: RecordType, record: &Record) -> bool {
    query_type == RecordType::ANY || query_type == record.record_type()
}

fn address_record(name: Name, ttl_s: u32, address: IpAddr) -> Record {
    let data = match address {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name, ttl_s, data)
}

/// A response's code and sections, before encoding.
struct Answer {
    response_code: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Answer {
    fn records(answers: Vec<Record>, additionals: Vec<Record>) -> Self {
        Self {
            response_code: ResponseCode::NoError,
            authoritative: true,
            answers,
            authorities: Vec::new(),
            additionals,
        }
    }

    /// The name exists but has nothing of the asked type (RFC 2308 NODATA).
    fn no_data(soa: &Record) -> Self {
        Self {
            authorities: vec![soa.clone()],
            ..Self::records(Vec::new(), Vec::new())
        }
    }

    fn nx_domain(soa: &Record) -> Self {
        Self {
            response_code: ResponseCode::NXDomain,
            ..Self::no_data(soa)
        }
    }

    /// Not about our data (refused, malformed, unsupported): not authoritative.
    fn error(response_code: ResponseCode) -> Self {
        Self {
            response_code,
            authoritative: false,
            ..Self::records(Vec::new(), Vec::new())
        }
    }

    /// Short outcome for logs; NODATA is a NOERROR worth telling apart.
    fn outcome(&self) -> String {
        match self.response_code {
            ResponseCode::NoError if self.answers.is_empty() => "NoData".to_owned(),
            code => format!("{code:?}"),
        }
    }
}

/// hickory's request handler for the zone.
struct ZoneHandler<N> {
    zone: ZoneData,
    names: Arc<N>,
}

impl<N: Names> ZoneHandler<N> {
    async fn answer(&self, request: &Request) -> Answer {
        if request.metadata.op_code != OpCode::Query {
            return Answer::error(ResponseCode::NotImp);
        }
        if request.edns.as_ref().is_some_and(|edns| edns.version() > 0) {
            return Answer::error(ResponseCode::BADVERS);
        }
        match request.queries.queries() {
            [query] => self.answer_query(query).await,
            _ => Answer::error(ResponseCode::FormErr),
        }
    }

    async fn answer_query(&self, query: &LowerQuery) -> Answer {
        let query_type = query.query_type();
        if query.query_class() != DNSClass::IN {
            return Answer::error(ResponseCode::Refused);
        }
        let name: &Name = query.name();
        match self.zone.owner_of(name) {
            Owner::OutOfZone => Answer::error(ResponseCode::Refused),
            // No zone transfers: the zone's content is the live registry.
            _ if matches!(query_type, RecordType::AXFR | RecordType::IXFR) => {
                Answer::error(ResponseCode::Refused)
            }
            Owner::Fixed => self.zone.fixed_answer(name, query_type),
            Owner::EmptyNonTerminal => Answer::no_data(&self.zone.soa),
            Owner::Nonexistent => Answer::nx_domain(&self.zone.soa),
            Owner::Tenant(label) => {
                let found = self.names.resolve(&label).await;
                // Owner name as asked, so the answer matches a 0x20-mixed question.
                self.zone
                    .tenant_answer(query.original().name(), query_type, found)
            }
        }
    }
}

#[async_trait::async_trait]
impl<N: Names> RequestHandler for ZoneHandler<N> {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let started = Instant::now();
        let answer = self.answer(request).await;
        log_query(request, &answer, started.elapsed());

        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = answer.authoritative;
        metadata.response_code = answer.response_code;
        let edns = response_edns(request);
        let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            &answer.answers,
            &answer.authorities,
            &[],
            &answer.additionals,
        );
        match response_handle.send_response(response).await {
            Ok(sent) => sent,
            Err(error) => {
                warn!(%error, src = %request.src(), "failed to send DNS response");
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// RFC 6891: a request with OPT gets an OPT back; it also caps our UDP size.
fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|asked| {
        let mut edns = Edns::new();
        edns.set_max_payload(asked.max_payload().clamp(512, MAX_UDP_PAYLOAD));
        edns
    })
}

fn log_query(request: &Request, answer: &Answer, elapsed: Duration) {
    let (name, query_type) = match request.queries.queries() {
        [query] => (
            query.original().name().to_string(),
            query.query_type().to_string(),
        ),
        _ => ("-".to_owned(), "-".to_owned()),
    };
    debug!(
        name,
        query_type,
        outcome = %answer.outcome(),
        answers = answer.answers.len(),
        ms = elapsed.as_millis() as u64,
        "dns query"
    );
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use hickory_server::proto::op::{Message, MessageType, Query};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::*;

    const WEB: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
    const SLEEPY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 6);
    const V6ONLY: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 7);
    const NS_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 53);
    const WAKE_DELAY: Duration = Duration::from_millis(200);

    struct FakeNames(HashMap<&'static str, IpAddr>);

    impl Names for FakeNames {
        async fn resolve(&self, label: &str) -> Resolution {
            if label == "sleepy" {
                tokio::time::sleep(WAKE_DELAY).await;
            }
            self.0
                .get(label)
                .map_or(Resolution::Unknown, |address| Resolution::Address(*address))
        }
    }

    struct TestServer {
        addr: SocketAddr,
        stop: Option<oneshot::Sender<()>>,
        task: Option<JoinHandle<Result<(), DnsError>>>,
    }

    impl TestServer {
        async fn start() -> Self {
            let names = FakeNames(HashMap::from([
                ("web", IpAddr::V4(WEB)),
                ("sleepy", IpAddr::V4(SLEEPY)),
                ("v6only", IpAddr::V6(V6ONLY)),
            ]));
            let (udp, tcp) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            let addr = udp.local_addr().unwrap();
            let (stop, stopped) = oneshot::channel::<()>();
            let zone = Zone::new("pico.test", IpAddr::V4(NS_ADDRESS));
            let task = tokio::spawn(serve(zone, Arc::new(names), udp, tcp, async {
                let _ = stopped.await;
            }));
            Self {
                addr,
                stop: Some(stop),
                task: Some(task),
            }
        }

        async fn stop(mut self) {
            if let Some(stop) = self.stop.take() {
                stop.send(()).unwrap();
            }
            if let Some(task) = self.task.take() {
                task.await.unwrap().unwrap();
            }
        }
    }

    fn query_message(name: &str, query_type: RecordType) -> Message {
        let mut message = Message::query();
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), query_type));
        message
    }

    async fn ask_udp(addr: SocketAddr, request: &Message) -> Message {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket
            .send_to(&request.to_vec().unwrap(), addr)
            .await
            .unwrap();
        let mut buffer = vec![0; 4096];
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buffer))
            .await
            .expect("no DNS answer within 5 s")
            .unwrap();
        let response = Message::from_vec(&buffer[..len]).unwrap();
        assert_eq!(response.metadata.id, request.metadata.id);
        assert_eq!(response.metadata.message_type, MessageType::Response);
        response
    }

    async fn ask_tcp(addr: SocketAddr, request: &Message) -> Message {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let bytes = request.to_vec().unwrap();
        let len = u16::try_from(bytes.len()).unwrap();
        stream.write_all(&len.to_be_bytes()).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        let mut len = [0; 2];
        stream.read_exact(&mut len).await.unwrap();
        let mut buffer = vec![0; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut buffer).await.unwrap();
        Message::from_vec(&buffer).unwrap()
    }

    async fn ask(addr: SocketAddr, name: &str, query_type: RecordType) -> Message {
        ask_udp(addr, &query_message(name, query_type)).await
    }

    fn assert_negative(response: &Message, code: ResponseCode) {
        assert_eq!(response.metadata.response_code, code);
        assert!(response.metadata.authoritative);
        assert!(response.answers.is_empty());
        assert_eq!(response.authorities.len(), 1);
        let soa = &response.authorities[0];
        assert_eq!(soa.record_type(), RecordType::SOA);
        assert_eq!(soa.name, Name::from_ascii("pico.test.").unwrap());
    }

    #[tokio::test]
    async fn answers_a_for_a_tenant_with_short_ttl() {
        let server = TestServer::start().await;
        let response = ask(server.addr, "web.pico.test.", RecordType::A).await;
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(response.metadata.authoritative);
        assert!(response.metadata.recursion_desired);
        assert!(!response.metadata.recursion_available);
        assert_eq!(response.answers.len(), 1);
        assert_eq!(response.answers[0].data, RData::A(A(WEB)));
        assert_eq!(response.answers[0].ttl, DEFAULT_TENANT_TTL_S);
        server.stop().await;
    }

    #[tokio::test]
    async fn other_family_is_nodata_with_soa() {
        let server = TestServer::start().await;
        let response = ask(server.addr, "web.pico.test.", RecordType::AAAA).await;
        assert_negative(&response, ResponseCode::NoError);
        let response = ask(server.addr, "v6only.pico.test.", RecordType::A).await;
        assert_negative(&response, ResponseCode::NoError);
        let response = ask(server.addr, "v6only.pico.test.", RecordType::AAAA).await;
        assert_eq!(response.answers[0].data, RData::AAAA(AAAA(V6ONLY)));
        server.stop().await;
    }

    #[tokio::test]
    async fn other_types_for_a_tenant_are_nodata() {
        let server = TestServer::start().await;
        let response = ask(server.addr, "web.pico.test.", RecordType::TXT).await;
        assert_negative(&response, ResponseCode::NoError);
        let response = ask(server.addr, "web.pico.test.", RecordType::ANY).await;
        assert_eq!(response.answers[0].data, RData::A(A(WEB)));
        server.stop().await;
    }

    #[tokio::test]
    async fn unknown_tenant_is_nxdomain_with_soa() {
        let server = TestServer::start().await;
        let response = ask(server.addr, "nope.pico.test.", RecordType::A).await;
        assert_negative(&response, ResponseCode::NXDomain);
        server.stop().await;
    }

    #[tokio::test]
    async fn deep_names_are_nxdomain() {
        let server = TestServer::start().await;
        let response = ask(server.addr, "a.web.pico.test.", RecordType::A).await;
        assert_negative(&response, ResponseCode::NXDomain);
        server.stop().await;
    }

    #[tokio::test]
    async fn apex_has_soa() {
        let server = TestServer::start().await;
        let response = ask(server.addr, "pico.test.", RecordType::SOA).await;
        assert!(response.metadata.authoritative);
        assert_eq!(response.answers.len(), 1);
        let RData::SOA(soa) = &response.answers[0].data else {
            panic!("not an SOA: {:?}", response.answers[0]);
        };
        assert_eq!(soa.mname, Name::from_ascii("ns.pico.test.").unwrap());
        assert_eq!(
            soa.rname,
            Name::from_ascii("hostmaster.pico.test.").unwrap()
        );
        assert_eq!(soa.minimum, NEGATIVE_TTL_S);
        server.stop().await;
    }

    #[tokio::test]
    async fn apex_has_ns_with_glue() {
        let server = TestServer::start().await;
        let ns_name = Name::from_ascii("ns.pico.test.").unwrap();
        let response = ask(server.addr, "pico.test.", RecordType::NS).await;
        assert!(response.metadata.authoritative);
        assert_eq!(response.answers.len(), 1);
        assert_eq!(response.answers[0].data, RData::NS(NS(ns_name.clone())));
        assert_eq!(response.additionals.len(), 1);
        assert_eq!(response.additionals[0].name, ns_name);
        assert_eq!(response.additionals[0].data, RData::A(A(NS_ADDRESS)));

        let response = ask(server.addr, "ns.pico.test.", RecordType::A).await;
        assert_eq!(response.answers[0].data, RData::A(A(NS_ADDRESS)));
        server.stop().await;
    }

    #[tokio::test]
    async fn outside_the_zone_is_refused() {
        let server = TestServer::start().await;
        let response = ask(server.addr, "example.com.", RecordType::A).await;
        assert_eq!(response.metadata.response_code, ResponseCode::Refused);
        assert!(!response.metadata.authoritative);
        assert!(!response.metadata.recursion_available);
        server.stop().await;
    }

    #[tokio::test]
    async fn names_match_case_insensitively_and_echo_the_question() {
        let server = TestServer::start().await;
        let response = ask(server.addr, "WeB.pIcO.TeSt.", RecordType::A).await;
        assert_eq!(response.answers[0].data, RData::A(A(WEB)));
        let asked = Name::from_ascii("WeB.pIcO.TeSt.").unwrap();
        assert!(response.queries[0].name().eq_case(&asked));
        server.stop().await;
    }

    #[tokio::test]
    async fn waits_for_a_sleeping_tenant() {
        let server = TestServer::start().await;
        let started = Instant::now();
        let response = ask(server.addr, "sleepy.pico.test.", RecordType::A).await;
        assert!(started.elapsed() >= WAKE_DELAY);
        assert_eq!(response.answers[0].data, RData::A(A(SLEEPY)));
        server.stop().await;
    }

    #[tokio::test]
    async fn answers_over_tcp() {
        let server = TestServer::start().await;
        let response = ask_tcp(server.addr, &query_message("web.pico.test.", RecordType::A)).await;
        assert!(response.metadata.authoritative);
        assert_eq!(response.answers[0].data, RData::A(A(WEB)));
        server.stop().await;
    }

    #[tokio::test]
    async fn other_opcodes_are_not_implemented() {
        let server = TestServer::start().await;
        let mut request = query_message("pico.test.", RecordType::SOA);
        request.metadata.op_code = OpCode::Notify;
        let response = ask_udp(server.addr, &request).await;
        assert_eq!(response.metadata.response_code, ResponseCode::NotImp);
        server.stop().await;
    }

    #[test]
    fn zone_defaults_normalise_the_origin() {
        let zone = Zone::new("pico.test", IpAddr::V4(NS_ADDRESS));
        assert_eq!(zone.origin, "pico.test.");
        assert_eq!(zone.ns_name, "ns.pico.test.");
        assert_eq!(zone.hostmaster, "hostmaster.pico.test.");
        assert_eq!(zone.ttl_s, 1);
    }

    #[tokio::test]
    async fn bind_uses_one_port_for_udp_and_tcp() {
        let (udp, tcp) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        assert_eq!(udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    }

    async fn dig(addr: SocketAddr, args: &[&str]) -> String {
        assert!(
            std::path::Path::new("/usr/bin/dig").exists(),
            "/usr/bin/dig missing: apt-get install -y bind9-dnsutils"
        );
        let mut command = std::process::Command::new("/usr/bin/dig");
        command
            .arg(format!("@{}", addr.ip()))
            .args(["-p", &addr.port().to_string()])
            .args(args);
        // dig blocks; keep it off the runtime thread that serves its query.
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .unwrap();
        assert!(output.status.success(), "dig failed: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    }

    #[tokio::test]
    async fn dig_sees_a_clean_authoritative_answer() {
        let server = TestServer::start().await;
        for transport in ["+notcp", "+tcp"] {
            let out = dig(server.addr, &["web.pico.test", "A", "+norec", transport]).await;
            assert!(out.contains("status: NOERROR"), "{out}");
            assert!(out.contains("flags: qr aa;"), "{out}");
            assert!(out.contains("10.0.0.5"), "{out}");
            assert!(!out.contains("WARNING"), "{out}");
        }
        let out = dig(server.addr, &["nope.pico.test", "A", "+norec"]).await;
        assert!(out.contains("status: NXDOMAIN"), "{out}");
        assert!(!out.contains("WARNING"), "{out}");
        server.stop().await;
    }
}
