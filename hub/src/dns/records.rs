//! The zone's contents and the answer to one question about them: which
//! names hold the fixed apex and server records, which are tenants, and what
//! code, records and authority section answer a query (RFC 2308 negative
//! answers, glue, ANY). Kept apart from the hickory handler and the sockets so
//! these rules stay pure, with no I/O, and read in one place; a tenant's
//! address comes in as a [`Resolution`], looked up by the handler.

use std::net::IpAddr;

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};

use super::{DnsError, Resolution, Zone};

/// SOA MINIMUM: how long resolvers may cache "no such tenant"; short so a
/// freshly created tenant becomes reachable quickly.
pub(super) const NEGATIVE_TTL_S: u32 = 5;
const SOA_REFRESH_S: i32 = 3600;
const SOA_RETRY_S: i32 = 600;
const SOA_EXPIRE_S: i32 = 86400;
/// TTL of the zone's own NS and server address records, which rarely change.
const INFRASTRUCTURE_TTL_S: u32 = 300;

fn absolute_name(text: &str) -> Result<Name, DnsError> {
    let mut name = Name::from_ascii(text).map_err(|source| DnsError::InvalidName {
        name: text.to_owned(),
        source,
    })?;
    name.set_fqdn(true);
    Ok(name)
}

/// The zone's fixed records, built once from [`Zone`].
pub(super) struct ZoneData {
    pub(super) origin: Name,
    pub(super) soa: Record,
    /// Apex SOA and NS, and the server's own address record.
    fixed: Vec<Record>,
    ns_address: Record,
    tenant_ttl_s: u32,
}

/// Where a queried name sits relative to the zone.
pub(super) enum Owner {
    OutOfZone,
    /// Owns one of the zone's fixed records (apex, server name).
    Fixed,
    /// Exists only as an ancestor of a fixed name, e.g. `b.ZONE` for `ns.b.ZONE`.
    EmptyNonTerminal,
    Tenant(String),
    Nonexistent,
}

impl ZoneData {
    pub(super) fn new(zone: &Zone, serial: u32) -> Result<Self, DnsError> {
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

    pub(super) fn owner_of(&self, name: &Name) -> Owner {
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

    pub(super) fn fixed_answer(&self, name: &Name, query_type: RecordType) -> Answer {
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

    pub(super) fn tenant_answer(
        &self,
        name: &Name,
        query_type: RecordType,
        found: Resolution,
    ) -> Answer {
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
pub(super) struct Answer {
    pub(super) response_code: ResponseCode,
    pub(super) authoritative: bool,
    pub(super) answers: Vec<Record>,
    pub(super) authorities: Vec<Record>,
    pub(super) additionals: Vec<Record>,
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
    pub(super) fn no_data(soa: &Record) -> Self {
        Self {
            authorities: vec![soa.clone()],
            ..Self::records(Vec::new(), Vec::new())
        }
    }

    pub(super) fn nx_domain(soa: &Record) -> Self {
        Self {
            response_code: ResponseCode::NXDomain,
            ..Self::no_data(soa)
        }
    }

    /// Not about our data (refused, malformed, unsupported): not authoritative.
    pub(super) fn error(response_code: ResponseCode) -> Self {
        Self {
            response_code,
            authoritative: false,
            ..Self::records(Vec::new(), Vec::new())
        }
    }

    /// Short outcome for logs; NODATA is a NOERROR worth telling apart.
    pub(super) fn outcome(&self) -> String {
        match self.response_code {
            ResponseCode::NoError if self.answers.is_empty() => "NoData".to_owned(),
            code => format!("{code:?}"),
        }
    }
}
