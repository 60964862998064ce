package config

import "testing"

func TestEditDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"", "abc", 3},
		{"abc", "", 3},
		{"CWCREDS_LOG_LEVL", "CWCREDS_LOG_LEVEL", 1},
		{"kitten", "sitting", 3},
		{"SOURCE", "SOURCE", 0},
		{"AB", "BA", 2},
	}
	for _, tc := range tests {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestSuggest(t *testing.T) {
	known := knownNames([]string{"TRAIN", "FAST_EVAL"})
	tests := []struct{ name, want string }{
		{"CWCREDS_LOG_LEVL", "CWCREDS_LOG_LEVEL"},
		{"CWCREDS_LISTEN_ADDRESS", "CWCREDS_LISTEN_ADDR"},
		{"CWCREDS_PROFILE", "CWCREDS_PROFILES"},
		{"CWCREDS_PROFILE_TRAIN_ORGID", "CWCREDS_PROFILE_TRAIN_ORG_ID"},
		{"CWCREDS_PROFILE_FAST_EVAL_DURATON", "CWCREDS_PROFILE_FAST_EVAL_DURATION"},
		{"CWCREDS_SOMETHING_ELSE", ""},
	}
	for _, tc := range tests {
		if got := suggest(tc.name, known); got != tc.want {
			t.Errorf("suggest(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestUnlistedInfix(t *testing.T) {
	tests := []struct {
		name, want string
		ok         bool
	}{
		{"CWCREDS_PROFILE_EVAL_SOURCE", "EVAL", true},
		{"CWCREDS_PROFILE_FAST_EVAL_CLIENT_TOKEN_FILE", "FAST_EVAL", true},
		{"CWCREDS_PROFILE_X_TOKEN_FILE", "X", true},
		{"CWCREDS_PROFILE_SOURCE", "", false},
		{"CWCREDS_PROFILE__SOURCE", "", false},
		{"CWCREDS_PROFILE_EVAL_REGION", "", false},
	}
	for _, tc := range tests {
		got, ok := unlistedInfix(tc.name)
		if got != tc.want || ok != tc.ok {
			t.Errorf("unlistedInfix(%q) = %q, %v; want %q, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}
