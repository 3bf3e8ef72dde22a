//! The seam between hickory-server and the zone: hickory's
//! [`RequestHandler`] turns a request into one question (refusing other
//! opcodes, EDNS versions, classes and zone transfers), asks [`Names`] about a
//! tenant, which may wait while it wakes, builds the response with a matching
//! EDNS OPT record and logs each query. What the zone answers is decided in
//! `records`; the sockets and the server's life belong to the parent module.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, LowerQuery, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::{DNSClass, Name, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tracing::{debug, warn};

use super::records::{Answer, Owner, ZoneData};
use super::Names;

/// Largest UDP answer we offer over EDNS (the DNS flag day 2020 value).
const MAX_UDP_PAYLOAD: u16 = 1232;

/// hickory's request handler for the zone.
pub(super) struct ZoneHandler<N> {
    zone: ZoneData,
    names: Arc<N>,
}

impl<N: Names> ZoneHandler<N> {
    pub(super) fn new(zone: ZoneData, names: Arc<N>) -> Self {
        Self { zone, names }
    }

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
