package helm

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/cwcreds/cwcreds/config"
)

var update = flag.Bool("update", false, "rewrite deploy/daemonset.yaml from the chart")

const (
	chartDir       = "../../deploy/helm/cwcreds"
	daemonSetFile  = "../../deploy/daemonset.yaml"
	rulesFile      = "../../deploy/prometheus/rules.yaml"
	chartRulesFile = chartDir + "/files/rules.yaml"
	namespace      = "cwcreds"
)

// daemonSetHeader opens deploy/daemonset.yaml, the chart rendered with its
// default values.
const daemonSetHeader = `# cwcreds as a Kubernetes DaemonSet: the Helm chart deploy/helm/cwcreds
# rendered with its default values (go test ./... -update in test/helm
# regenerates it; a test fails when it is stale). Prefer the chart:
#
#   helm install cwcreds deploy/helm/cwcreds --namespace cwcreds --create-namespace
#
# To apply this file instead, create the namespace and the Secret it reads:
#
#   kubectl create namespace cwcreds
#   kubectl label namespace cwcreds pod-security.kubernetes.io/enforce=privileged
#   kubectl -n cwcreds create secret generic cwcreds-upstream --from-file=api-token=./api-token
#   kubectl apply -f deploy/daemonset.yaml
#
# README "Pods on Kubernetes" explains the pod identity address and the pod spec.
`

// helm returns the helm binary: $HELM, else helm on PATH.
func helm(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	h, err := exec.LookPath("helm")
	if err != nil {
		t.Skip("helm not found: set HELM or put it on PATH (scripts/check-helm installs it)")
	}
	return h
}

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return out
}

// valuesFiles are the chart's test values, "" standing for the defaults.
func valuesFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "tests", "values-*.yaml"))
	if err != nil || len(files) < 3 {
		t.Fatalf("test values files: %v %v, want at least 3", files, err)
	}
	return append([]string{""}, files...)
}

func render(t *testing.T, values string) []byte {
	t.Helper()
	args := []string{"template", "cwcreds", chartDir, "--namespace", namespace}
	if values != "" {
		args = append(args, "-f", values)
	}
	return run(t, helm(t), args...)
}

// object is one rendered object, decoded strictly into its API type.
type object struct {
	kind string
	obj  any
}

// decodeStrict splits a rendered stream into documents and decodes each
// into the Go type of its apiVersion and kind, failing on an unknown kind,
// an unknown or duplicated field, or a value of the wrong type.
func decodeStrict(t *testing.T, stream []byte) []object {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var out []object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatalf("document %q: %v", doc, err)
		}
		var obj any
		switch tm.APIVersion + "/" + tm.Kind {
		case "apps/v1/DaemonSet":
			obj = &appsv1.DaemonSet{}
		case "v1/Service":
			obj = &corev1.Service{}
		case "monitoring.coreos.com/v1/ServiceMonitor":
			obj = &monitoringv1.ServiceMonitor{}
		case "monitoring.coreos.com/v1/PrometheusRule":
			obj = &monitoringv1.PrometheusRule{}
		default:
			t.Fatalf("rendered %s %s: no API type to check it against; add it to decodeStrict", tm.APIVersion, tm.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Fatalf("%s does not decode strictly: %v\n%s", tm.Kind, err, doc)
		}
		out = append(out, object{tm.Kind, obj})
	}
	return out
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for l := range strings.Lines(string(doc)) {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l)
		}
	}
	return b.Bytes()
}

// TestChartLintAndStrictDecode: for the defaults and every test values
// file, helm lint --strict passes, and every rendered object decodes
// strictly into its Kubernetes API type.
func TestChartLintAndStrictDecode(t *testing.T) {
	h := helm(t)
	for _, values := range valuesFiles(t) {
		t.Run(name(values), func(t *testing.T) {
			args := []string{"lint", "--strict", chartDir}
			if values != "" {
				args = append(args, "-f", values)
			}
			run(t, h, args...)
			objs := decodeStrict(t, render(t, values))
			if len(objs) == 0 || objs[0].kind != "DaemonSet" && !slices.ContainsFunc(objs, func(o object) bool { return o.kind == "DaemonSet" }) {
				t.Fatalf("rendered %v, want a DaemonSet", objs)
			}
			for _, o := range objs {
				if ds, ok := o.obj.(*appsv1.DaemonSet); ok {
					checkDaemonSet(t, ds)
				}
			}
		})
	}
}

func name(values string) string {
	if values == "" {
		return "defaults"
	}
	return strings.TrimSuffix(filepath.Base(values), ".yaml")
}

// checkDaemonSet asserts what the chart promises of every rendering: the
// node's network, a restrictive security context with NET_ADMIN only in
// the address init container, the probes, Secrets mounted 0440 for the
// fsGroup, and an environment the daemon's own config.Load accepts.
func checkDaemonSet(t *testing.T, ds *appsv1.DaemonSet) {
	t.Helper()
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork {
		t.Error("hostNetwork is off")
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 ||
		psc.FSGroup == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod security context %+v: want non-root, a fsGroup and seccomp RuntimeDefault", psc)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 || sc.Privileged != nil {
		t.Errorf("daemon security context %+v: want non-root, read-only root, no escalation, drop ALL and add nothing", sc)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want a CPU request and a memory limit", c.Resources)
	}
	for _, p := range []struct {
		probe *corev1.Probe
		path  string
	}{{c.LivenessProbe, "/healthz"}, {c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Host != "127.0.0.1" {
			t.Errorf("probe %+v: want GET %s on 127.0.0.1", p.probe, p.path)
		}
	}
	for _, ic := range spec.InitContainers {
		want := map[string]corev1.Capability{"runtime-dir": "CHOWN", "pod-identity-address": "NET_ADMIN"}[ic.Name]
		isc := ic.SecurityContext
		if want == "" || isc == nil || isc.Capabilities == nil || !slices.Equal(isc.Capabilities.Add, []corev1.Capability{want}) ||
			!slices.Equal(isc.Capabilities.Drop, []corev1.Capability{"ALL"}) || isc.AllowPrivilegeEscalation == nil || *isc.AllowPrivilegeEscalation {
			t.Errorf("init container %s security context %+v: want drop ALL and add only %q", ic.Name, isc, want)
		}
	}
	secrets := 0
	for _, v := range spec.Volumes {
		if s := v.Secret; s != nil {
			secrets++
			if s.DefaultMode == nil || *s.DefaultMode != 0o440 {
				t.Errorf("Secret volume %s mode %v, want 0440 (root-owned, group fsGroup: what the daemon's token rules accept with CWCREDS_ALLOW_INSECURE_FILE_MODES)", v.Name, s.DefaultMode)
			}
		}
	}
	environ := environOf(t, c.Env)
	if insecure := slices.Contains(environ, "CWCREDS_ALLOW_INSECURE_FILE_MODES=true"); insecure != (secrets > 0) {
		t.Errorf("CWCREDS_ALLOW_INSECURE_FILE_MODES set %v with %d Secret volumes: want it exactly when a Secret is mounted", insecure, secrets)
	}
	cfg, err := config.Load(environ)
	if err != nil {
		t.Fatalf("the daemon would refuse this environment:\n%v\nenv: %q", err, environ)
	}
	for _, a := range cfg.ListenAddrs() {
		if !strings.HasSuffix(a, ":7911") {
			t.Errorf("listen address %s: want port 7911", a)
		}
	}
	checkListeners(t, c, environ, cfg)
}

// nodeIP is what environOf gives status.hostIP.
const nodeIP = "10.0.0.5"

// podIdentityAddrs are the addresses pods reach the daemon at (config
// accepts them without CWCREDS_ALLOW_NON_LOOPBACK).
var podIdentityAddrs = []netip.Addr{
	netip.MustParseAddr("169.254.170.23"), netip.MustParseAddr("fd00:ec2::23"), netip.MustParseAddr("169.254.170.2"),
}

// checkListeners asserts that the credential API is served on loopback and
// the pod identity addresses only (never the node's IP, and without
// CWCREDS_ALLOW_NON_LOOPBACK), and that the metrics-only listener, when
// there is one, is on the node's IP at the container port named metrics.
func checkListeners(t *testing.T, c corev1.Container, environ []string, cfg *config.Config) {
	t.Helper()
	if slices.ContainsFunc(environ, func(e string) bool { return strings.HasPrefix(e, "CWCREDS_ALLOW_NON_LOOPBACK=") }) {
		t.Errorf("CWCREDS_ALLOW_NON_LOOPBACK is set: the credential API must stay on loopback and the pod identity addresses")
	}
	for _, a := range cfg.ListenAddrs() {
		ap, err := netip.ParseAddrPort(a)
		if err != nil || !ap.Addr().Unmap().IsLoopback() && !slices.Contains(podIdentityAddrs, ap.Addr().Unmap()) {
			t.Errorf("credential listener %s: want loopback or a pod identity address only", a)
		}
	}
	var metricsPort int32
	for _, p := range c.Ports {
		if p.Name == "metrics" {
			metricsPort = p.ContainerPort
		}
	}
	switch {
	case cfg.MetricsListenAddr == "" && metricsPort != 0:
		t.Errorf("container port metrics (%d) but no CWCREDS_METRICS_LISTEN_ADDR", metricsPort)
	case cfg.MetricsListenAddr != "" && cfg.MetricsListenAddr != fmt.Sprintf("%s:%d", nodeIP, metricsPort):
		t.Errorf("CWCREDS_METRICS_LISTEN_ADDR = %s, want the node's IP at the container port named metrics (%s:%d)",
			cfg.MetricsListenAddr, nodeIP, metricsPort)
	}
}

// TestServiceMonitorScrapesMetricsListener: with the ServiceMonitor on,
// Prometheus is pointed at the metrics-only listener on the node's IP
// (ServiceMonitor port -> Service port -> container port -> the address
// the daemon binds), and no credential listener is on the node's IP.
// Without it there is no metrics listener and no Service.
func TestServiceMonitorScrapesMetricsListener(t *testing.T) {
	var (
		ds  *appsv1.DaemonSet
		svc *corev1.Service
		sm  *monitoringv1.ServiceMonitor
	)
	for _, o := range decodeStrict(t, render(t, filepath.Join(chartDir, "tests", "values-monitoring.yaml"))) {
		switch v := o.obj.(type) {
		case *appsv1.DaemonSet:
			ds = v
		case *corev1.Service:
			svc = v
		case *monitoringv1.ServiceMonitor:
			sm = v
		}
	}
	if ds == nil || svc == nil || sm == nil {
		t.Fatalf("values-monitoring.yaml renders DaemonSet %v, Service %v, ServiceMonitor %v: want all three", ds != nil, svc != nil, sm != nil)
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "metrics" ||
		sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoints %+v: want one, port metrics, path /metrics", sm.Spec.Endpoints)
	}
	for k, v := range sm.Spec.Selector.MatchLabels {
		if svc.Labels[k] != v {
			t.Errorf("ServiceMonitor selects %s=%s, which the Service lacks", k, v)
		}
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "metrics" || svc.Spec.Ports[0].TargetPort.StrVal != "metrics" {
		t.Fatalf("Service ports %+v: want only metrics, targeting the container port metrics", svc.Spec.Ports)
	}
	for k, v := range svc.Spec.Selector {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("Service selects %s=%s, which the daemon's pods lack", k, v)
		}
	}
	c := ds.Spec.Template.Spec.Containers[0]
	environ := environOf(t, c.Env)
	cfg, err := config.Load(environ)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%s:%d", nodeIP, svc.Spec.Ports[0].Port)
	if cfg.MetricsListenAddr != want {
		t.Errorf("CWCREDS_METRICS_LISTEN_ADDR = %q, want %s: the Service's port on the node's IP", cfg.MetricsListenAddr, want)
	}
	for _, a := range cfg.ListenAddrs() {
		if strings.HasPrefix(a, nodeIP+":") {
			t.Errorf("credential listener %s is on the node's IP", a)
		}
	}
	checkListeners(t, c, environ, cfg)

	for _, o := range decodeStrict(t, render(t, "")) {
		if ds, ok := o.obj.(*appsv1.DaemonSet); ok {
			for _, e := range ds.Spec.Template.Spec.Containers[0].Env {
				if e.Name == "CWCREDS_METRICS_LISTEN_ADDR" || e.Name == "HOST_IP" {
					t.Errorf("the defaults set %s: no metrics listener unless the ServiceMonitor is on", e.Name)
				}
			}
		}
		if o.kind == "Service" || o.kind == "ServiceMonitor" {
			t.Errorf("the defaults render a %s", o.kind)
		}
	}
}

// environOf turns a container's env into the daemon's environment as the
// kubelet makes it: field references resolved with example values, and
// $(VAR) expanded from the variables before it.
func environOf(t *testing.T, env []corev1.EnvVar) []string {
	t.Helper()
	fields := map[string]string{"spec.nodeName": "node-a", "status.hostIP": "10.0.0.5"}
	vals := map[string]string{}
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	var out []string
	for _, e := range env {
		v := e.Value
		if e.ValueFrom != nil {
			if e.ValueFrom.FieldRef == nil {
				t.Fatalf("env %s: only field references are expected", e.Name)
			}
			var ok bool
			if v, ok = fields[e.ValueFrom.FieldRef.FieldPath]; !ok {
				t.Fatalf("env %s: unexpected field %s", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		}
		v = ref.ReplaceAllStringFunc(v, func(m string) string {
			if x, ok := vals[m[2:len(m)-1]]; ok {
				return x
			}
			return m
		})
		vals[e.Name] = v
		out = append(out, e.Name+"="+v)
	}
	return out
}

// TestDaemonSetFileCurrent: deploy/daemonset.yaml is the chart rendered
// with its defaults.
func TestDaemonSetFileCurrent(t *testing.T) {
	want := daemonSetHeader + string(render(t, ""))
	if *update {
		if err := os.WriteFile(daemonSetFile, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(daemonSetFile)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("%s is stale: regenerate it with `go test ./... -update` in test/helm", daemonSetFile)
	}
}

// TestRulesCopyCurrent: the chart's PrometheusRule carries
// deploy/prometheus/rules.yaml unchanged (helm packages only files inside
// the chart, so it keeps a copy).
func TestRulesCopyCurrent(t *testing.T) {
	src, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(chartRulesFile, src, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cp, err := os.ReadFile(chartRulesFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(src, cp) {
		t.Errorf("%s differs from %s: copy it (go test ./... -update in test/helm)", chartRulesFile, rulesFile)
	}
	var want monitoringv1.PrometheusRuleSpec
	if err := yaml.UnmarshalStrict(src, &want); err != nil {
		t.Fatalf("rules.yaml is not a PrometheusRule spec: %v", err)
	}
	for _, o := range decodeStrict(t, render(t, filepath.Join(chartDir, "tests", "values-monitoring.yaml"))) {
		if pr, ok := o.obj.(*monitoringv1.PrometheusRule); ok {
			if len(pr.Spec.Groups) != len(want.Groups) || len(pr.Spec.Groups[0].Rules) != len(want.Groups[0].Rules) {
				t.Errorf("rendered PrometheusRule has %d groups, want %d as in rules.yaml", len(pr.Spec.Groups), len(want.Groups))
			}
			return
		}
	}
	t.Error("values-monitoring.yaml renders no PrometheusRule")
}

// TestDecodeStrictRefusesUnknownFields: the check above would catch a
// misspelled field, which the API server would silently drop.
func TestDecodeStrictRefusesUnknownFields(t *testing.T) {
	doc := "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      hostNetwrk: true\n"
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict([]byte(doc), &ds); err == nil || !strings.Contains(err.Error(), "hostNetwrk") {
		t.Errorf("UnmarshalStrict of a misspelled field = %v, want an error naming it", err)
	}
}
