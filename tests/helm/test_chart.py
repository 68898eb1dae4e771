"""helm/onionpost proven without a cluster: rendered and linted with Helm's own library (the
helm-python-sdk package binds Helm's Go SDK; no helm binary), in both modes; the values
schema rejects bad values; every rendered manifest validates against the Kubernetes schemas
(kubernetes-validate, strict: unknown fields are errors).

Run by tests/tests/helm_chart.rs (and so by tests/run.sh), or directly:
    python -m pytest tests/helm
"""

import copy
import pathlib

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

CHART = pathlib.Path(__file__).resolve().parents[2] / "helm" / "onionpost"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas.
KUBE_VERSIONS = ["1.25.0", kubernetes_validate.latest_version()]

VALUES = {
    "secrets": {
        "secret": "0" * 64,
        "torControlPassword": "tor-control-password",
        "adminToken": "opk_" + "a" * 64,
    },
    "database": {"url": "postgres://onionpost:pw@postgres.db:5432/onionpost"},
}


def values(**changes):
    merged = copy.deepcopy(VALUES)
    merged.update(changes)
    return merged


def render(vals):
    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(vals, name="carrier", namespace="mail")


def documents(manifests):
    docs = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs


def by_kind(docs, kind):
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


@pytest.mark.parametrize("mode", ["monolithic", "distributed"])
def test_lint_finds_nothing_worse_than_info(mode):
    result = helm.lint(str(CHART), values(mode=mode), strict=True)
    assert result["errors"] == [], result
    worse = [m for m in result["messages"] if m["severity"] > 1]
    assert worse == [], worse


@pytest.mark.parametrize("mode", ["monolithic", "distributed"])
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_manifest_validates_against_kubernetes_schemas(mode, kube_version):
    docs = documents(render(values(mode=mode)))
    assert len(docs) >= 5
    for doc in docs:
        kubernetes_validate.validate(doc, kube_version, strict=True)


def containers(workload):
    return workload["spec"]["template"]["spec"]["containers"]


def test_monolithic_runs_every_service_in_one_deployment():
    docs = documents(render(values(mode="monolithic")))
    deployments = by_kind(docs, "Deployment")
    assert list(deployments) == ["carrier-onionpost"]
    (container,) = containers(deployments["carrier-onionpost"])
    assert container["args"] == ["serve", "--target", "all"]
    env = {e["name"]: e for e in container["env"]}
    # tor forwards to this pod's IP; secrets come from the Secret, never inline.
    assert env["ONIONPOST_TOR_TARGET_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert "valueFrom" in env["ONIONPOST_SECRET"] and "valueFrom" in env["ONIONPOST_DATABASE_URL"]


def test_distributed_runs_one_deployment_per_service():
    docs = documents(render(values(mode="distributed", distributed={
        "queue": {"replicas": 3}, "smtpOut": {"replicas": 2}, "admin": {"replicas": 1}})))
    deployments = by_kind(docs, "Deployment")
    assert sorted(deployments) == sorted(
        ["carrier-onionpost-edge", "carrier-onionpost-queue", "carrier-onionpost-smtp-out",
         "carrier-onionpost-portal", "carrier-onionpost-admin"])
    assert deployments["carrier-onionpost-queue"]["spec"]["replicas"] == 3
    assert deployments["carrier-onionpost-smtp-out"]["spec"]["replicas"] == 2
    targets = sorted(c["args"][-1] for d in deployments.values() for c in containers(d))
    # The portal twice: its Deployment for the cluster, and in the edge pod for the carrier's
    # onion, which tor forwards to that pod alone.
    assert targets == sorted(
        ["onion", "keys", "smtp-in", "imap", "portal", "queue", "smtp-out", "portal", "admin"])
    onion_faces = [
        {e["name"]: e.get("value") for e in c["env"]}.get("ONIONPOST_PORTAL_ONION", "true")
        for d in deployments.values() for c in containers(d) if c["args"][-1] == "portal"]
    assert sorted(onion_faces) == ["false", "true"]
    edge = [c["args"][-1] for c in containers(deployments["carrier-onionpost-edge"])]
    assert "portal" in edge
    # Every service is reachable at the address the others are given.
    services = by_kind(docs, "Service")
    for container in containers(deployments["carrier-onionpost-queue"]):
        for e in container["env"]:
            if e["name"].startswith("ONIONPOST_REMOTE_"):
                host, port = e["value"].removeprefix("http://").split(":")
                assert host in services, e
                assert int(port) in [p["port"] for p in services[host]["spec"]["ports"]], e


@pytest.mark.parametrize("mode", ["monolithic", "distributed"])
def test_every_container_has_probes_resources_and_no_root(mode):
    docs = documents(render(values(mode=mode)))
    workloads = list(by_kind(docs, "Deployment").values()) + list(by_kind(docs, "StatefulSet").values())
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert "readinessProbe" in container and "livenessProbe" in container, container["name"]
            assert container["resources"]["requests"]["memory"], container["name"]
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_tor_is_a_statefulset_with_a_persistent_volume():
    docs = documents(render(values()))
    (tor,) = by_kind(docs, "StatefulSet").values()
    claims = tor["spec"]["volumeClaimTemplates"]
    assert claims[0]["spec"]["resources"]["requests"]["storage"] == "1Gi"
    mounts = containers(tor)[0]["volumeMounts"]
    assert {"name": "data", "mountPath": "/var/lib/tor"} in mounts


@pytest.mark.parametrize("mode", ["monolithic", "distributed"])
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_a_pool_of_tors_is_named_one_by_one_to_the_onion_service(mode, kube_version):
    vals = values(mode=mode, tor={"replicas": 3, "maxOnionsPerTor": 250})
    if mode == "distributed":
        vals["distributed"] = {
            name: {"replicas": 2} for name in ("queue", "smtpOut", "portal", "admin")
        }
    docs = documents(render(vals))
    (tor,) = by_kind(docs, "StatefulSet").values()
    assert tor["spec"]["replicas"] == 3
    headless = by_kind(docs, "Service")[tor["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    env = {
        item["name"]: item.get("value")
        for deployment in by_kind(docs, "Deployment").values()
        for container in containers(deployment)
        for item in container.get("env", [])
        if item["name"].startswith("ONIONPOST_TOR_")
    }
    assert env["ONIONPOST_TOR_CONTROL"] == ",".join(
        f"carrier-onionpost-tor-{index}.carrier-onionpost-tor-pods:9051" for index in range(3)
    )
    assert env["ONIONPOST_TOR_MAX_ONIONS_PER_TOR"] == "250"
    for doc in docs:
        kubernetes_validate.validate(doc, kube_version, strict=True)
    if mode == "distributed":
        replicas = {name: d["spec"]["replicas"] for name, d in by_kind(docs, "Deployment").items()}
        assert replicas["carrier-onionpost-queue"] == 2
        assert replicas["carrier-onionpost-portal"] == 2


@pytest.mark.parametrize("mode", ["monolithic", "distributed"])
def test_only_tor_may_reach_outside(mode):
    docs = documents(render(values(mode=mode)))
    policies = by_kind(docs, "NetworkPolicy")
    tor = policies["carrier-onionpost-tor"]
    assert tor["spec"]["egress"] == [{}]
    onionpost = policies["carrier-onionpost"]
    assert onionpost["spec"]["policyTypes"] == ["Ingress", "Egress"]
    # No rule of the onionpost pods' policy allows egress to every address on every port.
    for rule in onionpost["spec"]["egress"]:
        assert rule.get("to") or rule.get("ports"), rule
        for peer in rule.get("to", []):
            assert "ipBlock" not in peer, rule
    # The tor policy selects only tor; the other excludes it.
    assert tor["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "tor"
    assert {"key": "app.kubernetes.io/component", "operator": "NotIn", "values": ["tor"]} in \
        onionpost["spec"]["podSelector"]["matchExpressions"]
    # Issue 18, item 12: tor reaches the onionpost pods only on the onion target ports, never
    # gRPC; every other rule naming pods of the release leaves tor out.
    for rule in onionpost["spec"]["ingress"]:
        for peer in rule.get("from", []):
            selector = peer.get("podSelector", {})
            if selector.get("matchLabels", {}).get("app.kubernetes.io/component") == "tor":
                assert rule["ports"] == [{"port": 10000, "endPort": 19999, "protocol": "TCP"}], rule
            elif "podSelector" in peer:
                assert {"key": "app.kubernetes.io/component", "operator": "NotIn",
                        "values": ["tor"]} in selector.get("matchExpressions", []), rule


def test_existing_secret_replaces_the_chart_secret():
    docs = documents(render({"secrets": {"existingSecret": "carrier-keys"}}))
    assert by_kind(docs, "Secret") == {}
    deployment = by_kind(docs, "Deployment")["carrier-onionpost"]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in containers(deployment)[0]["env"]
            if "secretKeyRef" in e.get("valueFrom", {})}
    assert refs == {"carrier-keys"}


@pytest.mark.parametrize("bad", [
    {"mode": "sharded"},
    {"image": {"repository": "onionpost", "tag": 1}},
    {"distributed": {"queue": {"replicas": 0}}},
    {"secrets": {"adminToken": "letmein"}},
    {"database": {"url": "mysql://db/onionpost"}},
    {"tor": {"image": {"repository": "t", "tag": "1"}, "persistence": {"size": "lots"}}},
    {"service": {"adminPort": 70000}},
    {"networkPolicy": {"enabled": "yes"}},
    {"env": {"PATH": "/tmp"}},
    {"replicaCount": 3},
    {"portal": {"signup": "everyone"}},
])
def test_schema_rejects_bad_values(bad):
    vals = values(**bad)
    with helm.Chart.load(str(CHART)) as chart:
        with pytest.raises(helm.HelmError):
            chart.validate_schema(vals)
        with pytest.raises(helm.HelmError):
            chart.render(vals, name="carrier", namespace="mail")
    result = helm.lint(str(CHART), vals)
    assert result["errors"], result


@pytest.mark.parametrize("mode", ["monolithic", "distributed"])
def test_the_portal_is_published_with_its_sign_up_policy(mode):
    docs = documents(render(values(mode=mode, portal={"signup": "voucher"})))
    deployments = by_kind(docs, "Deployment")
    name = "carrier-onionpost" if mode == "monolithic" else "carrier-onionpost-portal"
    (container,) = containers(deployments[name])
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ONIONPOST_PORTAL_SIGNUP"] == "voucher"
    assert env["ONIONPOST_PORTAL_LISTEN"] == "0.0.0.0:8088"
    services = by_kind(docs, "Service")
    service = services["carrier-onionpost" if mode == "monolithic" else "carrier-onionpost-portal"]
    assert 8088 in [p["port"] for p in service["spec"]["ports"]]
    policy = by_kind(docs, "NetworkPolicy")
    opened = [p.get("port") for doc in policy.values() for rule in doc["spec"].get("ingress", [])
              for p in rule.get("ports", [])]
    assert 8088 in opened, opened


def test_missing_secrets_are_named():
    with pytest.raises(helm.HelmError, match="secrets.secret is required"):
        render({"database": VALUES["database"]})
    with pytest.raises(helm.HelmError, match="database.url is required"):
        render({"secrets": VALUES["secrets"]})


def test_defaults_pass_the_schema():
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(VALUES)


# The clearnet gateway (issue 24) and rspamd at the gateway (issue 22).
DKIM_PEM = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIHNhbXBsZSBrZXkgZm9yIHRoZSBoZWxtIHRlc3Rz\n-----END PRIVATE KEY-----\n"


def gateway(**changes):
    settings = {"enabled": True, "domain": "mail.example.org", "dkim": {"privateKey": DKIM_PEM}}
    settings.update(changes)
    return settings


def gateway_component(mode):
    return "gateway" if mode == "distributed" else "onionpost"


def gateway_container(docs, mode):
    name = "carrier-onionpost-gateway" if mode == "distributed" else "carrier-onionpost"
    deployment = by_kind(docs, "Deployment")[name]
    (container,) = containers(deployment)
    return deployment, container


@pytest.mark.parametrize("mode", ["monolithic", "distributed"])
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_the_gateway_renders_and_validates(mode, kube_version):
    vals = values(mode=mode, gateway=gateway(replicas=2, rspamd={"enabled": True}))
    result = helm.lint(str(CHART), vals, strict=True)
    assert result["errors"] == [], result
    docs = documents(render(vals))
    for doc in docs:
        kubernetes_validate.validate(doc, kube_version, strict=True)
    deployment, container = gateway_container(docs, mode)
    if mode == "distributed":
        assert container["args"] == ["serve", "--target", "gateway"]
        assert deployment["spec"]["replicas"] == 2
    else:
        # `--target all` runs the gateway once its domain is set.
        assert container["args"] == ["serve", "--target", "all"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ONIONPOST_GATEWAY_DOMAIN"] == "mail.example.org"
    assert env["ONIONPOST_GATEWAY_LISTEN"] == "0.0.0.0:2525"
    assert {"name": "gateway-mx", "containerPort": 2525} in container["ports"]
    # The MX: port 25 on a Service of its own, to the pods running the gateway, keeping the
    # sender's address for SPF.
    services = by_kind(docs, "Service")
    mx = services["carrier-onionpost-gateway-mx"]
    assert mx["spec"]["type"] == "LoadBalancer"
    assert mx["spec"]["externalTrafficPolicy"] == "Local"
    assert mx["spec"]["ports"] == [
        {"name": "smtp", "port": 25, "targetPort": "gateway-mx", "protocol": "TCP"}]
    assert mx["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    if mode == "distributed":
        # Every other service is told where the gateway is, and a Service answers there.
        for other in by_kind(docs, "Deployment").values():
            for c in containers(other):
                if c.get("args", [""])[-1] in ("smtp-in", "queue", "admin", "portal"):
                    remote = {e["name"]: e.get("value") for e in c["env"]}
                    assert remote["ONIONPOST_REMOTE_GATEWAY"] == \
                        "http://carrier-onionpost-gateway:50051"
        assert [p["port"] for p in services["carrier-onionpost-gateway"]["spec"]["ports"]] == [50051]


@pytest.mark.parametrize("mode", ["monolithic", "distributed"])
def test_without_the_gateway_nothing_of_it_renders(mode):
    docs = documents(render(values(mode=mode, gateway={"rspamd": {"enabled": True}})))
    names = [doc["metadata"]["name"] for doc in docs]
    assert not [name for name in names if "gateway" in name or "rspamd" in name], names
    for deployment in by_kind(docs, "Deployment").values():
        for container in containers(deployment):
            assert not [e for e in container["env"] if "GATEWAY" in e["name"]], container["name"]


@pytest.mark.parametrize("service_type", ["NodePort", "ClusterIP"])
def test_the_mx_service_type_is_a_value(service_type):
    docs = documents(render(values(gateway=gateway(service={"type": service_type, "port": 2525}))))
    mx = by_kind(docs, "Service")["carrier-onionpost-gateway-mx"]
    assert mx["spec"]["type"] == service_type
    assert mx["spec"]["ports"][0]["port"] == 2525
    # A ClusterIP Service has no external traffic to keep the address of.
    assert ("externalTrafficPolicy" in mx["spec"]) == (service_type != "ClusterIP")


@pytest.mark.parametrize("mode", ["monolithic", "distributed"])
def test_only_the_gateway_pods_may_reach_port_25_outside(mode):
    docs = documents(render(values(mode=mode, gateway=gateway(rspamd={"enabled": True}))))
    policies = by_kind(docs, "NetworkPolicy")
    component = gateway_component(mode)
    outside = {
        name: rule
        for name, policy in policies.items()
        for rule in policy["spec"].get("egress", [])
        if rule == {} or any("ipBlock" in peer for peer in rule.get("to", []))
    }
    # tor reaches everywhere, as before; the gateway's pods port 25 and nothing else.
    assert outside == {
        "carrier-onionpost-tor": {},
        "carrier-onionpost-gateway": {
            "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}],
            "ports": [{"port": 25, "protocol": "TCP"}],
        },
    }
    policy = policies["carrier-onionpost-gateway"]
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == component
    assert policy["spec"]["egress"] == [outside["carrier-onionpost-gateway"]]
    # The internet reaches the MX port of those pods only.
    assert policy["spec"]["ingress"] == [{"ports": [{"port": 2525, "protocol": "TCP"}]}]
    for name, other in policies.items():
        if name != "carrier-onionpost-gateway":
            ports = [p.get("port") for rule in other["spec"].get("ingress", [])
                     for p in rule.get("ports", [])]
            assert 2525 not in ports, name
    # The gateway's pods are still onionpost pods: DNS, the database, the release's pods.
    main = policies["carrier-onionpost"]
    excluded = [e for e in main["spec"]["podSelector"]["matchExpressions"]
                if e["operator"] == "NotIn"]
    assert excluded == [{"key": "app.kubernetes.io/component", "operator": "NotIn",
                         "values": ["tor", "rspamd"]}]


@pytest.mark.parametrize("mode", ["monolithic", "distributed"])
def test_rspamd_runs_when_asked_and_only_the_gateway_reaches_it(mode):
    docs = documents(render(values(
        mode=mode, gateway=gateway(rspamd={"enabled": True}),
        rspamd={"image": {"repository": "registry.example/rspamd", "tag": "3.4"}})))
    rspamd = by_kind(docs, "Deployment")["carrier-onionpost-rspamd"]
    (container,) = containers(rspamd)
    assert container["image"] == "registry.example/rspamd:3.4"
    assert rspamd["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10003
    service = by_kind(docs, "Service")["carrier-onionpost-rspamd"]
    assert service["spec"]["type"] == "ClusterIP"
    assert [p["port"] for p in service["spec"]["ports"]] == [11333]
    _, gateway_pod = gateway_container(docs, mode)
    env = {e["name"]: e.get("value") for e in gateway_pod["env"]}
    assert env["ONIONPOST_GATEWAY_RSPAMD"] == "carrier-onionpost-rspamd:11333"
    policy = by_kind(docs, "NetworkPolicy")["carrier-onionpost-rspamd"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": 11333, "protocol": "TCP"}]
    (peer,) = ingress["from"]
    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == \
        gateway_component(mode)
    (egress,) = policy["spec"]["egress"]
    assert {p["port"] for p in egress["ports"]} == {53}
    # Without rspamd the gateway scores nothing and no rspamd runs.
    docs = documents(render(values(mode=mode, gateway=gateway())))
    assert "carrier-onionpost-rspamd" not in by_kind(docs, "Deployment")
    _, gateway_pod = gateway_container(docs, mode)
    assert "ONIONPOST_GATEWAY_RSPAMD" not in {e["name"] for e in gateway_pod["env"]}


def dkim_file(container, pod_spec):
    """The Secret and key behind the file ONIONPOST_GATEWAY_DKIM_KEY names."""
    env = {e["name"]: e.get("value") for e in container["env"]}
    path = pathlib.PurePosixPath(env["ONIONPOST_GATEWAY_DKIM_KEY"])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod_spec["volumes"] if v["name"] == mount["name"]]
    (item,) = [i for i in volume["secret"]["items"] if i["path"] == path.name]
    return volume["secret"]["secretName"], item["key"]


@pytest.mark.parametrize("mode", ["monolithic", "distributed"])
def test_the_dkim_key_comes_from_a_secret(mode):
    # In the chart's Secret.
    docs = documents(render(values(mode=mode, gateway=gateway())))
    deployment, container = gateway_container(docs, mode)
    pod = deployment["spec"]["template"]["spec"]
    assert dkim_file(container, pod) == ("carrier-onionpost", "gateway-dkim-key")
    secret = by_kind(docs, "Secret")["carrier-onionpost"]
    assert secret["stringData"]["gateway-dkim-key"] == DKIM_PEM
    # In a Secret of its own: the chart's keeps no key.
    docs = documents(render(values(mode=mode, gateway=gateway(
        dkim={"existingSecret": "mail-dkim", "key": "rsa.pem"}))))
    deployment, container = gateway_container(docs, mode)
    assert dkim_file(container, deployment["spec"]["template"]["spec"]) == ("mail-dkim", "rsa.pem")
    assert "gateway-dkim-key" not in by_kind(docs, "Secret")["carrier-onionpost"]["stringData"]
    # In secrets.existingSecret, with the carrier's other keys.
    docs = documents(render({"mode": mode, "secrets": {"existingSecret": "carrier-keys"},
                             "gateway": {"enabled": True, "domain": "mail.example.org"}}))
    deployment, container = gateway_container(docs, mode)
    assert dkim_file(container, deployment["spec"]["template"]["spec"]) == \
        ("carrier-keys", "gateway-dkim-key")


def test_a_gateway_without_a_dkim_key_is_refused_with_the_reason():
    with pytest.raises(helm.HelmError, match="gateway.dkim.privateKey is required"):
        render(values(gateway={"enabled": True, "domain": "mail.example.org"}))


@pytest.mark.parametrize("bad", [
    {"gateway": {"enabled": "yes"}},
    {"gateway": {"enabled": True, "dkim": {"privateKey": DKIM_PEM}}},
    {"gateway": {"enabled": True, "domain": "mail example org"}},
    {"gateway": {"domain": "localhost"}},
    {"gateway": {"replicas": 0}},
    {"gateway": {"service": {"type": "Ingress"}}},
    {"gateway": {"service": {"port": 0}}},
    {"gateway": {"service": {"externalTrafficPolicy": "Nearest"}}},
    {"gateway": {"dkim": {"privateKey": "hunter2"}}},
    {"gateway": {"dkim": {"key": "a/b"}}},
    {"gateway": {"rspamd": {"enabled": True, "image": "rspamd"}}},
    {"gateway": {"mx": 25}},
    {"rspamd": {"image": {"repository": "rspamd", "tag": 3.4}}},
])
def test_schema_rejects_bad_gateway_values(bad):
    vals = values(**bad)
    with helm.Chart.load(str(CHART)) as chart:
        with pytest.raises(helm.HelmError):
            chart.validate_schema(vals)
