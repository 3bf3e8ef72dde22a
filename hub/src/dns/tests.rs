//! Tests of the DNS server, mostly end to end over real sockets: a server on a
//! free loopback port with a fake [`Names`], asked over UDP, TCP or `dig`,
//! since what matters is what resolvers see on the wire.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use hickory_server::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, NS};
use hickory_server::proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::records::NEGATIVE_TTL_S;
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
