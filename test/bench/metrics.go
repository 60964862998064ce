package main

import (
	"fmt"
	"net/http"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metrics is one scrape of a daemon's /metrics, parsed with the Prometheus
// text parser.
type metrics map[string]*dto.MetricFamily

// scrapeMetrics GETs url (no token: /metrics is behind the Host and
// browser/proxy guards only) and parses it.
func (b *bench) scrapeMetrics(url string) (metrics, error) {
	resp, err := b.httpc.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	return metrics(mf), nil
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// sum adds up the samples of family name whose labels match keep (nil: all).
func (ms metrics) sum(name string, keep func(*dto.Metric) bool) float64 {
	var s float64
	if f := ms[name]; f != nil {
		for _, m := range f.GetMetric() {
			if keep == nil || keep(m) {
				s += value(m)
			}
		}
	}
	return s
}

// has reports whether family name is there.
func (ms metrics) has(name string) bool { return ms[name] != nil && len(ms[name].GetMetric()) > 0 }

// byLabel sums family name per value of label l, over the samples keep allows.
func (ms metrics) byLabel(name, l string, keep func(*dto.Metric) bool) map[string]float64 {
	out := map[string]float64{}
	if f := ms[name]; f != nil {
		for _, m := range f.GetMetric() {
			if keep == nil || keep(m) {
				out[label(m, l)] += value(m)
			}
		}
	}
	return out
}

// maxOf is the largest sample of family name (0 if none).
func (ms metrics) maxOf(name string) float64 {
	var mx float64
	if f := ms[name]; f != nil {
		for i, m := range f.GetMetric() {
			if v := value(m); i == 0 || v > mx {
				mx = v
			}
		}
	}
	return mx
}

func labelIs(l, v string) func(*dto.Metric) bool {
	return func(m *dto.Metric) bool { return label(m, l) == v }
}

func labelIsNot(l, v string) func(*dto.Metric) bool {
	return func(m *dto.Metric) bool { return label(m, l) != v }
}
