use std::net::{IpAddr, SocketAddr};

use super::*;

const DEAD: Duration = Duration::from_secs(10);

fn hosted(name: &str, port: u16, state: TenantState) -> HostedTenant {
    HostedTenant {
        name: name.into(),
        port,
        state: Some(state),
        checkpoint: Some(format!("{name}-1")),
        generation: Some(1),
        rss_bytes: Some(1 << 20),
    }
}

/// `worker`'s heartbeat reporting tenant web (port 8080) in `state`, alone.
fn web_on(worker: &str, state: TenantState) -> Heartbeat {
    beat(worker, vec![hosted("web", 8080, state)])
}

fn beat(worker: &str, tenants: Vec<HostedTenant>) -> Heartbeat {
    let n = worker.trim_start_matches('w').parse::<u8>().unwrap_or(9);
    Heartbeat {
        worker: worker.into(),
        api: SocketAddr::from(([127, 0, 0, n], 7070)),
        public_addr: IpAddr::from([127, 0, 0, n]),
        memory_total_bytes: 8 << 30,
        memory_available_bytes: 4 << 30,
        load: 0.1,
        tenants,
    }
}

#[test]
fn a_heartbeat_registers_its_worker_and_tenants() {
    let t0 = Instant::now();
    let mut r = Registry::from_record(HubRecord::default(), DEAD, t0);
    r.heartbeat(&web_on("w1", TenantState::SwappedOut), t0);
    let w = r.whereabouts("web", t0).unwrap();
    assert_eq!(w.worker, "w1");
    assert_eq!(w.address, IpAddr::from([127, 0, 0, 1]));
    assert_eq!(w.state, Some(TenantState::SwappedOut));
    assert!(w.worker_alive);
    assert!(r.whereabouts("nope", t0).is_none());
    let record = r.take_record().expect("changed");
    assert_eq!(record.tenants["web"].placed_because, "added on worker w1");
    assert!(r.take_record().is_none(), "nothing changed since");
}

#[test]
fn a_silent_worker_is_dead_after_the_timeout_and_back_with_its_next_heartbeat() {
    let t0 = Instant::now();
    let mut r = Registry::from_record(HubRecord::default(), DEAD, t0);
    r.heartbeat(&web_on("w1", TenantState::Running), t0);
    assert!(r.workers(t0 + DEAD / 2)[0].alive);
    assert!(!r.workers(t0 + DEAD)[0].alive);
    assert!(!r.whereabouts("web", t0 + DEAD).unwrap().worker_alive);
    r.heartbeat(&web_on("w1", TenantState::Running), t0 + DEAD);
    assert!(r.whereabouts("web", t0 + DEAD).unwrap().worker_alive);
}

#[test]
fn a_port_is_one_tenants_across_the_cluster() {
    let t0 = Instant::now();
    let mut r = Registry::from_record(HubRecord::default(), DEAD, t0);
    r.heartbeat(&web_on("w1", TenantState::Running), t0);
    r.heartbeat(
        &beat("w2", vec![hosted("blog", 8080, TenantState::Running)]),
        t0,
    );
    assert!(r.whereabouts("blog", t0).is_none());
    assert_eq!(r.tenants(t0).len(), 1);
}

#[test]
fn a_tenant_stays_with_its_live_worker_and_follows_it_once_dead() {
    let t0 = Instant::now();
    let mut r = Registry::from_record(HubRecord::default(), DEAD, t0);
    r.heartbeat(&web_on("w1", TenantState::Running), t0);
    r.heartbeat(&web_on("w2", TenantState::Running), t0);
    assert_eq!(r.whereabouts("web", t0).unwrap().worker, "w1");
    let later = t0 + DEAD;
    r.heartbeat(&web_on("w2", TenantState::Running), later);
    let w = r.whereabouts("web", later).unwrap();
    assert_eq!((w.worker.as_str(), w.worker_alive), ("w2", true));
    assert!(r.tenants(later)[0].placed_because.contains("w1 was dead"));
}

#[test]
fn a_tenant_placed_elsewhere_is_released_by_its_old_worker_when_it_returns() {
    let t0 = Instant::now();
    let mut r = Registry::from_record(HubRecord::default(), DEAD, t0);
    r.heartbeat(&web_on("w1", TenantState::SwappedOut), t0);
    r.heartbeat(&beat("w2", vec![]), t0 + DEAD);
    assert_eq!(r.placement_of("web"), Some((Some("web-1".into()), 1 << 20)));
    r.moved(
        "web",
        "w2",
        "its worker w1 was dead".into(),
        None,
        t0 + DEAD,
    );
    // w2 reports before it has adopted it: the placement stands.
    r.heartbeat(&beat("w2", vec![]), t0 + DEAD);
    let w = r.whereabouts("web", t0 + DEAD).unwrap();
    assert_eq!(
        (w.worker.as_str(), w.state),
        ("w2", Some(TenantState::SwappedOut))
    );
    let back = t0 + DEAD + Duration::from_secs(1);
    r.heartbeat(&web_on("w2", TenantState::Running), back);
    let release = r.heartbeat(&web_on("w1", TenantState::Running), back);
    assert_eq!(release, ["web"]);
    assert_eq!(r.whereabouts("web", back).unwrap().worker, "w2");
}

#[test]
fn a_claim_is_refused_a_port_or_name_another_tenant_holds() {
    let t0 = Instant::now();
    let mut r = Registry::from_record(HubRecord::default(), DEAD, t0);
    r.heartbeat(&web_on("w1", TenantState::Running), t0);
    r.heartbeat(&beat("w2", vec![]), t0);
    let port_taken = r.claim("w2", "blog", 8080, t0).unwrap_err();
    assert!(port_taken.contains("tenant web's"), "{port_taken}");
    let name_taken = r.claim("w2", "web", 8080, t0).unwrap_err();
    assert!(name_taken.contains("lives on worker w1"), "{name_taken}");
    r.claim("w2", "blog", 8081, t0).unwrap();
    assert!(r.claim("w1", "other", 8081, t0).is_err(), "claimed already");
    // Not reported by its worker while it starts: the claim stands, then lapses.
    r.heartbeat(&beat("w2", vec![]), t0 + Duration::from_secs(1));
    assert!(r.claim("w1", "other", 8081, t0).is_err(), "still claimed");
    let later = t0 + CLAIM_GRACE;
    r.heartbeat(&beat("w1", vec![]), later);
    r.heartbeat(&beat("w2", vec![]), later);
    r.claim("w1", "other", 8081, later).unwrap();
}

#[test]
fn a_tenant_its_worker_stops_reporting_is_forgotten() {
    let t0 = Instant::now();
    let mut r = Registry::from_record(HubRecord::default(), DEAD, t0);
    r.heartbeat(
        &beat(
            "w1",
            vec![
                hosted("web", 8080, TenantState::Running),
                hosted("db", 6379, TenantState::Running),
            ],
        ),
        t0,
    );
    r.take_record();
    r.heartbeat(&web_on("w1", TenantState::Running), t0);
    assert!(r.whereabouts("db", t0).is_none());
    assert!(!r.take_record().unwrap().tenants.contains_key("db"));
}

#[test]
fn a_restarted_hub_knows_what_its_record_holds_and_gives_workers_their_grace() {
    let t0 = Instant::now();
    let mut r = Registry::from_record(HubRecord::default(), DEAD, t0);
    r.heartbeat(&web_on("w1", TenantState::SwappedOut), t0);
    let record = r.take_record().unwrap();
    let t1 = t0 + DEAD * 3;
    let again = Registry::from_record(record, DEAD, t1);
    let w = again.whereabouts("web", t1).unwrap();
    assert_eq!(
        (w.worker.as_str(), w.worker_alive, w.state),
        ("w1", true, None)
    );
    assert!(!again.whereabouts("web", t1 + DEAD).unwrap().worker_alive);
}

#[test]
fn a_busy_tenant_keeps_its_last_known_state_and_a_wake_marks_it_waking() {
    let t0 = Instant::now();
    let mut r = Registry::from_record(HubRecord::default(), DEAD, t0);
    r.heartbeat(&web_on("w1", TenantState::SwappedOut), t0);
    let mut busy = hosted("web", 8080, TenantState::Running);
    busy.state = None;
    r.heartbeat(&beat("w1", vec![busy]), t0);
    assert_eq!(
        r.whereabouts("web", t0).unwrap().state,
        Some(TenantState::SwappedOut)
    );
    r.waking("web");
    assert_eq!(
        r.whereabouts("web", t0).unwrap().state,
        Some(TenantState::SwappingIn)
    );
}

#[test]
fn a_tenant_a_known_worker_starts_reporting_is_saved() {
    let t0 = Instant::now();
    let mut r = Registry::from_record(HubRecord::default(), DEAD, t0);
    r.heartbeat(&beat("w1", vec![]), t0);
    r.take_record();
    let mut fresh = hosted("web", 8080, TenantState::Running);
    fresh.checkpoint = None;
    fresh.generation = None;
    r.heartbeat(&beat("w1", vec![fresh]), t0);
    let record = r.take_record().expect("a new tenant is a change to save");
    assert_eq!(record.tenants["web"].worker, "w1");
}

#[test]
fn a_draining_worker_keeps_its_tenants_claims_nothing_new_and_stays_draining() {
    let t0 = Instant::now();
    let mut r = Registry::from_record(HubRecord::default(), DEAD, t0);
    r.heartbeat(&web_on("w1", TenantState::Running), t0);
    r.take_record();
    assert!(r
        .set_draining("w9", true)
        .unwrap_err()
        .contains("no worker w9"));
    r.set_draining("w1", true).unwrap();
    assert!(r.workers(t0)[0].draining);
    assert!(r.take_record().expect("changed").workers["w1"].draining);
    // Its heartbeats keep it draining; what it has stays its own.
    r.heartbeat(&web_on("w1", TenantState::Running), t0);
    assert!(r.is_draining("w1"));
    assert_eq!(r.tenants_on("w1"), ["web"]);
    r.claim("w1", "web", 8080, t0).unwrap();
    let refused = r.claim("w1", "blog", 8081, t0).unwrap_err();
    assert!(refused.contains("w1 is draining"), "{refused}");
    // Across a restart of the hub, then undrained.
    let record = HubRecord {
        workers: [(
            "w1".to_string(),
            r.workers.get("w1").unwrap().record.clone(),
        )]
        .into(),
        tenants: Default::default(),
    };
    let mut restarted = Registry::from_record(record, DEAD, t0);
    assert!(restarted.is_draining("w1"));
    restarted.set_draining("w1", false).unwrap();
    restarted.claim("w1", "blog", 8081, t0).unwrap();
}
