//! The confs shipped for deployment load as the gateway would load them: the compose demo's
//! and the Kubernetes base's, with the overlay's services file. Their hosts are cluster or
//! compose names, so they are resolved by a scripted resolver, not the machine's DNS.

use std::path::Path;

use gateway::config::{load_with, parse_services_with, ServiceDefaults};
use gateway::resolver::ScriptedResolver;

fn resolver() -> ScriptedResolver {
    let resolver = ScriptedResolver::default();
    for name in [
        "backend-9001",
        "backend-9002",
        "example-headless",
        "product-headless",
    ] {
        resolver.answer(name, &["10.1.0.1", "10.1.0.2"]);
    }
    resolver
}

#[test]
fn the_compose_conf_loads_with_two_backends_and_an_open_admin_listener() {
    let config = load_with(Path::new("deploy/compose/gateway.yaml"), &resolver()).unwrap();
    let product = &config.services[0];
    assert_eq!(product.name, "product");
    assert_eq!(product.backends.len(), 2);
    assert_eq!(config.admin_listen, Some("0.0.0.0:9091".parse().unwrap()));
}

#[test]
fn the_compose_conf_serves_tls_with_the_demo_certificate() {
    let config = load_with(Path::new("deploy/compose/gateway.yaml"), &resolver()).unwrap();
    let tls = config.tls.expect("a TLS listener");
    assert_eq!(tls.listen, "0.0.0.0:8443".parse().unwrap());
    assert!(tls.certificates[0].names.contains(&"localhost".to_owned()));
}

#[test]
fn the_kubernetes_confs_load_and_discover_by_dns() {
    // The base reads its certificate from the gateway-tls Secret's mount: put the demo
    // overlay's pair where the Secret would be.
    let dir = std::env::temp_dir().join(format!("gateway-deploy-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("tls")).unwrap();
    let overlay = Path::new("deploy/kubernetes/overlays/demo");
    std::fs::copy(overlay.join("demo-only-tls.crt"), dir.join("tls/tls.crt")).unwrap();
    std::fs::copy(overlay.join("demo-only-tls.key"), dir.join("tls/tls.key")).unwrap();
    std::fs::copy(
        "deploy/kubernetes/base/services.yaml",
        dir.join("services.yaml"),
    )
    .unwrap();
    let conf = std::fs::read_to_string("deploy/kubernetes/base/gateway.yaml")
        .unwrap()
        .replace("/etc/gateway-tls/", &format!("{}/tls/", dir.display()));
    std::fs::write(dir.join("gateway.yaml"), conf).unwrap();
    let config = load_with(&dir.join("gateway.yaml"), &resolver()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(config.admin_listen, Some("0.0.0.0:9091".parse().unwrap()));
    assert!(config.services[0].discovery.is_some());
    assert_eq!(config.tls.unwrap().listen, "0.0.0.0:8443".parse().unwrap());

    let text = std::fs::read_to_string("deploy/kubernetes/overlays/demo/services.yaml").unwrap();
    let services = parse_services_with(
        Path::new("services.yaml"),
        &text,
        &ServiceDefaults::default(),
        &resolver(),
    )
    .unwrap();
    assert_eq!(services[0].name, "product");
    assert_eq!(services[0].backends.len(), 2, "one backend per pod address");
    assert_eq!(services[0].backends[0].authority, "product-headless:9001");
}
