//! Tests of `config::redis`: URLs, legacy variables, Sentinel lists, redaction.

use super::*;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    redis: RedisArgs,
}

fn store(
    flags: &[&str],
    env: &'static [(&'static str, &'static str)],
) -> anyhow::Result<StoreConfig> {
    let mut argv = vec!["tally"];
    argv.extend_from_slice(flags);
    let args = Cli::try_parse_from(argv).unwrap().redis;
    StoreConfig::resolve(&args, &|k| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })
}

#[test]
fn url_with_credentials_is_parsed_and_redacted() {
    let StoreConfig::Redis(t) =
        store(&["--redis-url", "redis://app:p%40ss@cache:6380/3"], &[]).unwrap()
    else {
        panic!("expected standalone redis")
    };
    assert_eq!((t.host.as_str(), t.port, t.auth.db), ("cache", 6380, 3));
    assert_eq!(t.auth.username.as_deref(), Some("app"));
    assert_eq!(
        t.auth
            .password
            .as_ref()
            .unwrap()
            .current()
            .unwrap()
            .expose(),
        "p@ss"
    );
    let shown = t.to_string();
    assert_eq!(shown, "redis://app:<redacted>@cache:6380/3");
    assert!(!format!("{t:?}").contains("p@ss"));
}

#[test]
fn explicit_password_overrides_the_url() {
    let StoreConfig::Redis(t) = store(
        &["--redis-url", "rediss://:old@h", "--redis-password", "new"],
        &[],
    )
    .unwrap() else {
        panic!()
    };
    assert!(t.tls.is_some());
    assert_eq!(t.auth.password.unwrap().current().unwrap().expose(), "new");
}

#[test]
fn bad_urls_are_rejected_without_echoing_them() {
    for bad in ["http://x", "redis://:secretpw@h/abc", "not a url secretpw"] {
        let err = store(&["--redis-url", bad], &[]).unwrap_err().to_string();
        assert!(!err.contains("secretpw"), "{err}");
    }
}

#[test]
fn legacy_variables_select_redis() {
    let env = &[
        ("REDIS_HOST", "redis"),
        ("REDIS_PORT", "6380"),
        ("REDIS_PASSWORD", "pw"),
        ("REDIS_DB", "2"),
    ];
    let StoreConfig::Redis(t) = store(&[], env).unwrap() else {
        panic!()
    };
    assert_eq!((t.host.as_str(), t.port, t.auth.db), ("redis", 6380, 2));
    assert_eq!(t.auth.password.unwrap().current().unwrap().expose(), "pw");
}

#[test]
fn sentinels_parse_with_default_port_and_ipv6() {
    let StoreConfig::Sentinel(t) = store(
        &[
            "--redis-sentinels",
            "s1:26380,s2,[::1]:26381",
            "--sentinel-password",
            "sp",
        ],
        &[],
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(
        t.sentinels,
        vec![
            ("s1".into(), 26380),
            ("s2".into(), 26379),
            ("::1".into(), 26381)
        ]
    );
    assert_eq!(t.master_name, "mymaster");
    assert!(!StoreConfig::Sentinel(t).to_string().contains("sp "));
    assert!(store(&["--redis-sentinels", "s1:x"], &[]).is_err());
    assert!(store(
        &["--redis-sentinels", "s1", "--redis-url", "redis://h"],
        &[]
    )
    .is_err());
}

#[test]
fn nothing_configured_means_memory() {
    assert!(matches!(store(&[], &[]).unwrap(), StoreConfig::Memory));
}

#[test]
fn a_key_namespace_is_visible_ascii_without_braces() {
    let namespace = |value: &str| {
        Cli::try_parse_from(["tally", "--key-namespace", value]).map(|c| c.redis.key_namespace)
    };
    assert_eq!(namespace("blue-release").unwrap(), "blue-release");
    for bad in ["", "a b", "{tag}", "tally}", "ü", &"x".repeat(65)] {
        assert!(namespace(bad).is_err(), "{bad:?}");
    }
    let default = Cli::try_parse_from(["tally"]).unwrap().redis.key_namespace;
    assert_eq!(default, "tally");
}

#[test]
fn cluster_seeds_parse_with_default_port_and_exclude_other_modes() {
    let StoreConfig::Cluster(t) = store(
        &[
            "--redis-cluster",
            "n1:7000,n2,[::1]:7001",
            "--redis-password",
            "cluster-secret",
        ],
        &[],
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(
        t.nodes,
        vec![
            ("n1".into(), 7000),
            ("n2".into(), 6379),
            ("::1".into(), 7001)
        ]
    );
    assert_eq!(t.auth.db, 0);
    assert!(t.tls.is_none());
    let shown = StoreConfig::Cluster(t).to_string();
    assert!(!shown.contains("cluster-secret"), "{shown}");
    assert!(shown.contains("nodes=n1:7000,n2:6379"), "{shown}");
    for other in [["--redis-url", "redis://h"], ["--redis-sentinels", "s1"]] {
        let mut flags = vec!["--redis-cluster", "n1"];
        flags.extend(other);
        assert!(store(&flags, &[]).is_err(), "{other:?}");
    }
    // A cluster has database 0 only.
    assert!(store(&["--redis-cluster", "n1", "--redis-db", "2"], &[]).is_err());
    assert!(store(&["--redis-cluster", "n1", "--redis-db", "0"], &[]).is_ok());
    assert!(store(&["--redis-cluster", "n1:x"], &[]).is_err());
}
