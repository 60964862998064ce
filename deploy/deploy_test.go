// Package deploy_test checks the monitoring files in deploy/: the
// Prometheus alert rules (prometheus/rules.yaml) and the Grafana dashboard
// (grafana/cwcreds.json). Every PromQL expression is parsed with the
// Prometheus parser, and every selector must name a metric the daemon
// exports and match a series it produces: the metrics come from the real
// metrics package registered into a fresh registry, never from a list kept
// here. promtool runs the rules' own unit tests (scripts/check-alerts).
//
// This package has only tests: nothing the daemon builds imports it or the
// Prometheus server module.
package deploy_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/cwapi"
	"github.com/cwcreds/cwcreds/metrics"
	"github.com/cwcreds/cwcreds/server"
)

const (
	rulesFile     = "prometheus/rules.yaml"
	ruleTestsFile = "prometheus/rules_test.yaml"
	dashboardFile = "grafana/cwcreds.json"
	readmeFile    = "../README.md"
	runbookPrefix = "https://github.com/cwcreds/cwcreds/blob/main/README.md#"
)

// requiredAlerts must exist in rules.yaml (issue 10).
var requiredAlerts = []string{"CwcredsDown", "CwcredsProfileUnhealthy", "CwcredsKeyExpiringSoon", "CwcredsUpstreamRejected"}

// targetLabels are the labels Prometheus adds to every scraped series.
var targetLabels = []string{"job", "instance"}

// The test profile, and the values the dashboard variables get.
const testProfile = "train"

// testWorkloadProfile is a workload-oidc profile of the daemon the
// dashboard is checked against, for its per-identity panels.
const testWorkloadProfile = "pods"

var grafanaVars = map[string]string{
	"__rate_interval": "5m", "__interval": "1m", "__range": "6h",
	"__interval_ms": "60000", "__range_ms": "21600000", "__range_s": "21600",
	"instance": "node-a:7911", "profile": testProfile + "|" + testWorkloadProfile, "job": "cwcreds",
}

// series is one exported time series: its name and labels.
type series struct {
	name   string
	labels map[string]string
}

// exported returns the series the daemon exports, by registering the real
// metrics into a fresh registry, driving every observer once (so labelled
// series exist) and gathering. Upstream calls go through a real
// cwapi.Client whose HTTP answers are 401 and 403, so the outcome labels
// are exactly what the daemon derives from such replies. It also returns
// the series of those rejections ("rejected") and of a refused revoke.
func exported(t *testing.T) (all []series, rejected, revokeRefused []series) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, "test")
	if err != nil {
		t.Fatal(err)
	}
	expires := time.Now().Add(time.Hour)
	if err := m.WatchProfiles(statusSource{{Profile: testProfile, Healthy: true, Expiration: &expires},
		{Profile: testWorkloadProfile, Healthy: true, Workload: &broker.WorkloadStatus{Identities: 3}}}, nil); err != nil {
		t.Fatal(err)
	}
	m.Requests(testProfile).Count(server.Outcome(0))
	m.Requests("")
	p := m.Profile(testProfile)
	p.Hit()
	p.MintStarted("refresh")
	p.MintDone(nil)
	p.(broker.CheckObserver).KeyChecked("accepted", time.Second)
	p.(broker.ReapObserver).OrphansReaped("ok", 1)
	wp := m.Profile(testWorkloadProfile)
	wp.MintStarted("request")
	wp.IdentityEvicted(broker.EvictExpired)
	wp.TokenRefused(errors.New("refused"))

	// Before the rejections: what an ordinary call produces.
	m.UpstreamCall(cwapi.PathAccessKey, "ok", 50*time.Millisecond)
	before := gather(t, reg)

	status := http.StatusUnauthorized
	c, err := cwapi.NewClient("https://api.invalid", func(o *cwapi.ClientOptions) {
		o.Observer = m
		o.HTTPClient = doer(func(*http.Request) (*http.Response, error) {
			body := `{"code":16,"message":"unauthenticated"}`
			if status == http.StatusForbidden {
				body = `{"code":7,"message":"permission denied"}`
			}
			return &http.Response{StatusCode: status, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(body))}, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, status = range []int{http.StatusUnauthorized, http.StatusForbidden} {
		if _, err := c.CreateAccessKey(ctx, "token", time.Hour, nil); err == nil {
			t.Fatalf("CreateAccessKey answered %d: no error", status)
		}
	}
	afterMints := gather(t, reg)
	status = http.StatusForbidden
	if err := c.RevokeAccessKey(ctx, "token", "CWKEY"); err == nil {
		t.Fatal("RevokeAccessKey answered 403: no error")
	}
	all = gather(t, reg)
	return all, newSeries(before, afterMints, "cwcreds_upstream_requests_total"),
		newSeries(afterMints, all, "cwcreds_upstream_requests_total")
}

type statusSource []broker.Status

func (s statusSource) Status() []broker.Status { return s }

type doer func(*http.Request) (*http.Response, error)

func (d doer) Do(r *http.Request) (*http.Response, error) { return d(r) }

// gather lists reg's series; a histogram gives its _bucket (with le), _sum
// and _count series.
func gather(t *testing.T, reg *prometheus.Registry) []series {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []series
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			lbls := map[string]string{}
			for _, lp := range mt.GetLabel() {
				lbls[lp.GetName()] = lp.GetValue()
			}
			if mf.GetType() != dto.MetricType_HISTOGRAM {
				out = append(out, series{mf.GetName(), lbls})
				continue
			}
			out = append(out, series{mf.GetName() + "_sum", lbls}, series{mf.GetName() + "_count", lbls})
			for _, b := range mt.GetHistogram().GetBucket() {
				out = append(out, series{mf.GetName() + "_bucket", with(lbls, "le", strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64))})
			}
			out = append(out, series{mf.GetName() + "_bucket", with(lbls, "le", "+Inf")})
		}
	}
	return out
}

func with(m map[string]string, k, v string) map[string]string {
	c := map[string]string{k: v}
	for a, b := range m {
		c[a] = b
	}
	return c
}

// newSeries returns the series named name in after that are not in before.
func newSeries(before, after []series, name string) []series {
	var out []series
	for _, s := range after {
		if s.name == name && !slices.ContainsFunc(before, func(b series) bool { return b.name == s.name && sameLabels(b.labels, s.labels) }) {
			out = append(out, s)
		}
	}
	return out
}

func sameLabels(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// matches reports whether sel selects s. Matchers on target labels (job,
// instance) are ignored: gathered series have none.
func matches(sel *parser.VectorSelector, s series) bool {
	for _, m := range sel.LabelMatchers {
		switch {
		case m.Name == model.MetricNameLabel:
			if !m.Matches(s.name) {
				return false
			}
		case slices.Contains(targetLabels, m.Name):
		default:
			if !m.Matches(s.labels[m.Name]) {
				return false
			}
		}
	}
	return true
}

// selectors parses expr and returns its vector selectors (those inside
// range selectors and subqueries included).
func selectors(expr string) ([]*parser.VectorSelector, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var out []*parser.VectorSelector
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			out = append(out, vs)
		}
		return nil
	})
	return out, nil
}

// checkExpr parses expr and checks that each of its selectors names a
// metric the daemon exports (or up, which Prometheus writes) and matches at
// least one series the daemon produces, so a misspelt metric, label or
// label value fails.
func checkExpr(t *testing.T, where, expr string, all []series) []*parser.VectorSelector {
	t.Helper()
	sels, err := selectors(expr)
	if err != nil {
		t.Errorf("%s: PromQL does not parse: %v\n%s", where, err, expr)
		return nil
	}
	if len(sels) == 0 {
		t.Errorf("%s: no metric selector in %q", where, expr)
	}
	for _, sel := range sels {
		name := sel.Name
		if name == "" {
			t.Errorf("%s: selector %s has no metric name", where, sel)
			continue
		}
		if name == "up" {
			continue
		}
		if !slices.ContainsFunc(all, func(s series) bool { return s.name == name }) {
			t.Errorf("%s: metric %q is not exported by the daemon", where, name)
			continue
		}
		if !slices.ContainsFunc(all, func(s series) bool { return matches(sel, s) }) {
			t.Errorf("%s: selector %s matches no series the daemon exports (wrong label or value?)", where, sel)
		}
	}
	return sels
}

// ruleFile is the part of a Prometheus rule file the test reads; unknown
// keys are errors, so a misspelt "annotations" fails.
type ruleFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func loadYAML(t *testing.T, path string, v any) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// readmeAnchors returns the GitHub anchors of README's headings.
func readmeAnchors(t *testing.T) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(readmeFile)
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	drop := regexp.MustCompile(`[^\p{L}\p{N}\- _]`)
	inCode := false
	for line := range strings.Lines(string(data)) {
		if strings.HasPrefix(line, "```") {
			inCode = !inCode
		}
		if inCode || !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(line, "#"))
		anchors[strings.ReplaceAll(drop.ReplaceAllString(strings.ToLower(h), ""), " ", "-")] = true
	}
	return anchors
}

func TestAlertRules(t *testing.T) {
	all, rejected, revokeRefused := exported(t)
	if len(rejected) != 2 || len(revokeRefused) != 1 {
		t.Fatalf("driving 401, 403 and a refused revoke gave upstream series %v and %v", rejected, revokeRefused)
	}
	anchors := readmeAnchors(t)
	var rf ruleFile
	loadYAML(t, rulesFile, &rf)

	seen := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			where := rulesFile + ": " + r.Alert + r.Record
			if r.Alert == "" {
				t.Errorf("%s: only alerting rules are expected", where)
				continue
			}
			if seen[r.Alert] {
				t.Errorf("%s: alert defined twice", where)
			}
			seen[r.Alert] = true
			if !strings.HasPrefix(r.Alert, "Cwcreds") {
				t.Errorf("%s: alert names start with Cwcreds", where)
			}
			if !slices.Contains([]string{"critical", "warning", "info"}, r.Labels["severity"]) {
				t.Errorf("%s: severity label %q; want critical, warning or info", where, r.Labels["severity"])
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", where, a)
				}
			}
			if u := r.Annotations["runbook_url"]; u != "" {
				anchor, ok := strings.CutPrefix(u, runbookPrefix)
				if !ok || !anchors[anchor] {
					t.Errorf("%s: runbook_url %q is not %s<anchor of a README heading>", where, u, runbookPrefix)
				}
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for: %v", where, err)
				}
			}
			sels := checkExpr(t, where, r.Expr, all)

			if r.Alert == "CwcredsUpstreamRejected" {
				// Every selector of the rejection counter must select what the
				// daemon records for a 401 and a 403 to a mint, and not a
				// refused revoke.
				for _, sel := range sels {
					if sel.Name != "cwcreds_upstream_requests_total" {
						continue
					}
					for _, s := range rejected {
						if !matches(sel, s) {
							t.Errorf("%s: %s does not select the daemon's series for a rejected mint %v", where, sel, s.labels)
						}
					}
					for _, s := range revokeRefused {
						if matches(sel, s) {
							t.Errorf("%s: %s selects a refused revoke %v", where, sel, s.labels)
						}
					}
				}
			}
		}
	}
	for _, a := range requiredAlerts {
		if !seen[a] {
			t.Errorf("%s: no alert %s", rulesFile, a)
		}
	}

	// rules_test.yaml has, for each alert, an evaluation where it fires and
	// one where it does not (promtool checks that they pass).
	var tf struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	data, err := os.ReadFile(ruleTestsFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &tf); err != nil {
		t.Fatalf("%s: %v", ruleTestsFile, err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tf.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for a := range seen {
		if !fires[a] || !quiet[a] {
			t.Errorf("%s: %s needs a case where it fires and one where it does not (fires %v, quiet %v)", ruleTestsFile, a, fires[a], quiet[a])
		}
	}
}

// grafanaVar matches Grafana's variable syntaxes: $var, ${var}, ${var:fmt}
// and [[var]].
var grafanaVar = regexp.MustCompile(`\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)`)

// substitute replaces Grafana variables in expr with valid values; an
// unknown variable is an error.
func substitute(t *testing.T, where, expr string, defined map[string]bool) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		m := grafanaVar.FindStringSubmatch(v)
		name := m[1] + m[2] + m[3]
		val, ok := grafanaVars[name]
		if !ok || (!strings.HasPrefix(name, "__") && !defined[name]) {
			t.Errorf("%s: unknown variable $%s in %q", where, name, expr)
		}
		return val
	})
}

type panel struct {
	ID         int             `json:"id"`
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource json.RawMessage `json:"datasource"`
	Targets    []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

// labelValues matches label_values(selector, label) and label_values(label).
var labelValues = regexp.MustCompile(`^label_values\((?:(.+),)?\s*(\w+)\s*\)$`)

func TestDashboard(t *testing.T) {
	all, _, _ := exported(t)
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID           string  `json:"uid"`
		Title         string  `json:"title"`
		SchemaVersion int     `json:"schemaVersion"`
		Panels        []panel `json:"panels"`
		Templating    struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("%s: uid %q, title %q, schemaVersion %d: want a uid, a title and schemaVersion >= 36", dashboardFile, d.UID, d.Title, d.SchemaVersion)
	}

	defined := map[string]bool{}
	for _, v := range d.Templating.List {
		defined[v.Name] = true
	}
	for _, want := range []string{"datasource", "instance", "profile"} {
		if !defined[want] {
			t.Errorf("%s: no template variable %q", dashboardFile, want)
		}
	}
	for _, v := range d.Templating.List {
		where := dashboardFile + ": variable " + v.Name
		var q struct {
			Query string `json:"query"`
		}
		var s string
		switch {
		case json.Unmarshal(v.Query, &s) == nil:
			q.Query = s
		case json.Unmarshal(v.Query, &q) != nil:
			t.Errorf("%s: query %s", where, v.Query)
		}
		switch v.Type {
		case "datasource":
			if q.Query != "prometheus" {
				t.Errorf("%s: datasource variable of type %q; want prometheus", where, q.Query)
			}
		case "query":
			m := labelValues.FindStringSubmatch(q.Query)
			if m == nil || m[1] == "" {
				t.Errorf("%s: %q; want label_values(<selector>, <label>)", where, q.Query)
				continue
			}
			checkExpr(t, where, substitute(t, where, m[1], defined), all)
		}
	}

	ids := map[int]bool{}
	exprs := 0
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			where := dashboardFile + ": panel " + p.Title
			if ids[p.ID] {
				t.Errorf("%s: duplicate id %d", where, p.ID)
			}
			ids[p.ID] = true
			if p.Type != "row" {
				if !strings.Contains(string(p.Datasource), "${datasource}") {
					t.Errorf("%s: datasource %s; want the ${datasource} variable", where, p.Datasource)
				}
				if len(p.Targets) == 0 {
					t.Errorf("%s: no query", where)
				}
			}
			for _, tg := range p.Targets {
				exprs++
				checkExpr(t, where+" query "+tg.RefID, substitute(t, where, tg.Expr, defined), all)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	if exprs == 0 {
		t.Errorf("%s: no queries", dashboardFile)
	}

	// Every metric the daemon exports is shown somewhere (histograms by
	// their buckets).
	shown := map[string]bool{}
	for _, s := range all {
		if !strings.HasPrefix(s.name, "cwcreds_") || strings.HasSuffix(s.name, "_sum") || strings.HasSuffix(s.name, "_count") || shown[s.name] {
			continue
		}
		shown[s.name] = true
		if !strings.Contains(string(data), s.name) {
			t.Errorf("%s: no panel shows %s", dashboardFile, s.name)
		}
	}
}
