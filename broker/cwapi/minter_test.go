package cwapi

import (
	"maps"
	"strings"
	"testing"
)

func TestWorkloadAttributes(t *testing.T) {
	base := AuditAttributes("gpu-node-1", "pods")
	got := WorkloadAttributes(base, "ml-team", "trainer", "job-7/bad pod name "+strings.Repeat("x", 80))
	want := map[string]string{AttrNode: "gpu-node-1", AttrProfile: "pods", AttrNamespace: "ml-team",
		AttrServiceAccount: "trainer", AttrPod: labelValue("job-7/bad pod name " + strings.Repeat("x", 80))}
	if !maps.Equal(got, want) {
		t.Errorf("WorkloadAttributes = %v, want %v", got, want)
	}
	if len(got[AttrPod]) > 63 || strings.ContainsAny(got[AttrPod], "/ ") {
		t.Errorf("pod attribute %q is not a valid attribute value", got[AttrPod])
	}
	if _, ok := base[AttrNamespace]; ok {
		t.Error("WorkloadAttributes modified base")
	}
	if got := WorkloadAttributes(base, "", "", ""); !maps.Equal(got, base) {
		t.Errorf("no Kubernetes claims: %v, want just %v", got, base)
	}
}
