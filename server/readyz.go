package server

import "net/http"

// readyBody is the /readyz response.
type readyBody struct {
	Ready bool `json:"ready"`
	// Profiles is how many profiles the daemon serves.
	Profiles int `json:"profiles"`
	// NotReady lists the profiles holding no servable key, and why.
	NotReady []notReadyProfile `json:"notReady,omitempty"`
}

type notReadyProfile struct {
	Profile string `json:"profile"`
	Reason  string `json:"reason"`
}

// readyz is the readiness probe: 200 only when every profile holds a key
// that may be served now, else 503 naming the profiles that do not and why
// (the broker's reason, which holds no secret). It reads the cache state
// and never calls upstream.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	st := s.keys.Status()
	body := readyBody{Ready: true, Profiles: len(st)}
	for _, p := range st {
		if p.Healthy {
			continue
		}
		body.Ready = false
		reason := p.Reason
		if reason == "" {
			reason = "no servable key"
		}
		body.NotReady = append(body.NotReady, notReadyProfile{Profile: p.Profile, Reason: reason})
	}
	status := http.StatusOK
	if !body.Ready {
		status = http.StatusServiceUnavailable
	}
	s.writeJSON(w, status, body)
}
