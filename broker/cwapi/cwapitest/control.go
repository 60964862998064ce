package cwapitest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-jose/go-jose/v4"
)

const controlPrefix = "/_emulator"

// duration is a time.Duration in control JSON: a Go duration string such as
// "200ms", or a number of seconds.
type duration time.Duration

func (d duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: want a Go duration such as \"2s\"", clip(s))
		}
		*d = duration(v)
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil || math.Abs(secs) > math.MaxInt64/float64(time.Second) {
		return errors.New("duration: want a Go duration string or a number of seconds")
	}
	*d = duration(secs * float64(time.Second))
	return nil
}

// faultJSON is a Fault in control JSON.
type faultJSON struct {
	Endpoint   string   `json:"endpoint"`
	Status     int      `json:"status"`
	Code       int      `json:"code"`
	Message    string   `json:"message"`
	RetryAfter duration `json:"retryAfter"`
	Count      int      `json:"count"`
	Malformed  bool     `json:"malformed"`
	Body       string   `json:"body,omitempty"`
	Delay      duration `json:"delay,omitempty"`
}

// keyJSON is a Key in control JSON, secret included.
type keyJSON struct {
	AccessKeyID   string            `json:"accessKeyId"`
	SecretKey     string            `json:"secretKey"`
	PrincipalName string            `json:"principalName"`
	OrgID         string            `json:"orgId"`
	Attributes    map[string]string `json:"attributes"`
	Expiry        string            `json:"expiry"`
	Created       string            `json:"created"`
	Endpoint      string            `json:"endpoint"`
	Status        string            `json:"status"`
}

func (k Key) control() keyJSON {
	return keyJSON{
		AccessKeyID: k.AccessKeyID, SecretKey: k.SecretKey, PrincipalName: k.Principal,
		OrgID: k.OrgID, Attributes: k.Attributes, Expiry: formatTime(k.Expiry),
		Created: k.Created.UTC().Format(time.RFC3339Nano), Endpoint: k.Endpoint, Status: k.Status,
	}
}

// controlRoutes adds the /_emulator/ control surface to r.
func (e *Emulator) controlRoutes(r chi.Router) {
	ok := func(w http.ResponseWriter) { writeJSON(w, http.StatusOK, struct{}{}) }

	r.Get(controlPrefix+"/stats", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, e.Stats())
	})
	r.Post(controlPrefix+"/reset-stats", func(w http.ResponseWriter, _ *http.Request) {
		e.ResetStats()
		ok(w)
	})
	latencyControl(r, "/latency", e.Latency, e.SetLatency)
	latencyControl(r, "/reply-latency", e.ReplyLatency, e.SetReplyLatency)

	r.Get(controlPrefix+"/faults", func(w http.ResponseWriter, _ *http.Request) {
		out := []faultJSON{}
		for _, f := range e.Faults() {
			out = append(out, faultJSON{
				Endpoint: f.Endpoint, Status: f.Status, Code: f.Code, Message: f.Message,
				RetryAfter: duration(f.RetryAfter), Count: f.Count, Malformed: f.Malformed, Body: f.Body,
				Delay: duration(f.Delay),
			})
		}
		writeJSON(w, http.StatusOK, map[string][]faultJSON{"faults": out})
	})
	r.Post(controlPrefix+"/faults", func(w http.ResponseWriter, r *http.Request) {
		var in faultJSON
		if aerr := decodeControl(w, r, &in); aerr != nil {
			writeError(w, aerr)
			return
		}
		switch {
		case in.Endpoint != "" && !IsMintingEndpoint(in.Endpoint):
			writeError(w, invalid("endpoint must be empty or a minting endpoint name"))
			return
		case in.Status != 0 && (in.Status < 400 || in.Status > 599):
			writeError(w, invalid("status must be 400-599"))
			return
		case in.Code < 0 || in.Code > 16:
			writeError(w, invalid("code must be a gRPC code, 1-16"))
			return
		case in.RetryAfter < 0:
			writeError(w, invalid("retryAfter must not be negative"))
			return
		case in.Delay < 0:
			writeError(w, invalid("delay must not be negative"))
			return
		}
		e.InjectFault(Fault{
			Endpoint: in.Endpoint, Status: in.Status, Code: in.Code, Message: in.Message,
			RetryAfter: time.Duration(in.RetryAfter), Count: in.Count, Malformed: in.Malformed, Body: in.Body,
			Delay: time.Duration(in.Delay),
		})
		ok(w)
	})
	r.Delete(controlPrefix+"/faults", func(w http.ResponseWriter, _ *http.Request) {
		e.ClearFaults()
		ok(w)
	})

	r.Post(controlPrefix+"/api-tokens", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Token     string `json:"token"`
			Principal string `json:"principal"`
			OrgID     string `json:"orgId"`
			Denied    bool   `json:"denied"`
		}
		if aerr := decodeControl(w, r, &in); aerr != nil {
			writeError(w, aerr)
			return
		}
		if in.Token == "" || in.Principal == "" || in.OrgID == "" {
			writeError(w, invalid("token, principal and orgId required"))
			return
		}
		e.AddAPIToken(in.Token, Identity{Principal: in.Principal, OrgID: in.OrgID, Denied: in.Denied})
		ok(w)
	})
	r.Post(controlPrefix+"/oidc-issuers", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Issuer   string          `json:"issuer"`
			OrgID    string          `json:"orgId"`
			Audience string          `json:"audience"`
			JWKSURL  string          `json:"jwksUrl"`
			Keys     json.RawMessage `json:"keys"`
		}
		if aerr := decodeControl(w, r, &in); aerr != nil {
			writeError(w, aerr)
			return
		}
		if in.Issuer == "" || in.OrgID == "" {
			writeError(w, invalid("issuer and orgId required"))
			return
		}
		cfg := OIDCIssuer{OrgID: in.OrgID, Audience: in.Audience, JWKSURL: in.JWKSURL}
		if len(in.Keys) > 0 {
			var set jose.JSONWebKeySet
			if err := json.Unmarshal(in.Keys, &set); err != nil {
				writeError(w, invalid("keys: want a JWKS, {\"keys\":[...]}: %v", err))
				return
			}
			cfg.Keys = &set
		}
		if own := e.Issuer(); own != nil && in.Issuer == own.URL() && cfg.Keys == nil && cfg.JWKSURL == "" {
			cfg.Issuer = own
		}
		e.AddOIDCIssuer(in.Issuer, cfg)
		ok(w)
	})
	e.issuerControls(r)
	r.Post(controlPrefix+"/saml-configs", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			ConfigID string `json:"configId"`
			OrgID    string `json:"orgId"`
		}
		if aerr := decodeControl(w, r, &in); aerr != nil {
			writeError(w, aerr)
			return
		}
		if in.ConfigID == "" || in.OrgID == "" {
			writeError(w, invalid("configId and orgId required"))
			return
		}
		e.AddSAMLConfig(in.ConfigID, SAMLConfig{OrgID: in.OrgID})
		ok(w)
	})

	r.Get(controlPrefix+"/keys", func(w http.ResponseWriter, _ *http.Request) {
		out := []keyJSON{}
		for _, k := range e.Keys() {
			out = append(out, k.control())
		}
		writeJSON(w, http.StatusOK, map[string][]keyJSON{"keys": out})
	})
	r.Get(controlPrefix+"/keys/{accessKeyId}", func(w http.ResponseWriter, r *http.Request) {
		k, found := e.Key(chi.URLParam(r, "accessKeyId"))
		if !found {
			writeError(w, errorf(CodeNotFound, "access key not found"))
			return
		}
		writeJSON(w, http.StatusOK, k.control())
	})
}

// decodeControl reads a control body strictly: one JSON object, no unknown
// fields, so a mistyped field is an error rather than silently ignored.
func decodeControl(w http.ResponseWriter, r *http.Request, v any) *apiError {
	data, aerr := readBody(w, r)
	if aerr != nil {
		return aerr
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return invalid("invalid control request: %v", err)
	}
	if d.More() {
		return invalid("invalid control request: trailing data after the JSON object")
	}
	return nil
}

// latencyControl serves GET and PUT {"latency":"200ms"} on path for one of
// the emulator's latency settings.
func latencyControl(r chi.Router, path string, get func() time.Duration, set func(time.Duration)) {
	reply := func(w http.ResponseWriter) {
		writeJSON(w, http.StatusOK, map[string]duration{"latency": duration(get())})
	}
	r.Get(controlPrefix+path, func(w http.ResponseWriter, _ *http.Request) { reply(w) })
	r.Put(controlPrefix+path, func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Latency *duration `json:"latency"`
		}
		if aerr := decodeControl(w, r, &in); aerr != nil {
			writeError(w, aerr)
			return
		}
		if in.Latency == nil || *in.Latency < 0 {
			writeError(w, invalid("latency required, at least 0"))
			return
		}
		set(time.Duration(*in.Latency))
		reply(w)
	})
}

// forgeries names the Forgery values in control JSON.
var forgeries = map[string]Forgery{
	"alg-none":        ForgeAlgNone,
	"hmac-public-key": ForgeHMACPublicKey,
	"foreign-key":     ForgeForeignKey,
	"unknown-kid":     ForgeUnknownKID,
	"tampered":        ForgeTampered,
}

// issuerControls adds the controls of the emulator's own issuer (see
// StartIssuer). Without one they answer 404/code 5.
func (e *Emulator) issuerControls(r chi.Router) {
	own := func(w http.ResponseWriter) *Issuer {
		iss := e.Issuer()
		if iss == nil {
			writeError(w, errorf(CodeNotFound, "the emulator serves no OIDC issuer"))
		}
		return iss
	}
	type keyInfo struct {
		KeyID   string `json:"kid"`
		Alg     string `json:"alg"`
		Current bool   `json:"current"`
	}
	r.Get(controlPrefix+"/oidc-issuer", func(w http.ResponseWriter, _ *http.Request) {
		iss := own(w)
		if iss == nil {
			return
		}
		keys := []keyInfo{}
		for _, k := range iss.KeySet().Keys {
			keys = append(keys, keyInfo{KeyID: k.KeyID, Alg: k.Algorithm, Current: iss.CurrentKeyID(k.Algorithm) == k.KeyID})
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"issuer": iss.URL(), "discoveryUrl": iss.URL() + DiscoveryPath, "jwksUri": iss.JWKSURL(),
			"keys": keys, "stats": iss.Stats(),
		})
	})
	r.Post(controlPrefix+"/oidc-tokens", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Subject        string          `json:"subject"`
			Audience       json.RawMessage `json:"audience"`
			Namespace      string          `json:"namespace"`
			ServiceAccount string          `json:"serviceAccount"`
			Pod            string          `json:"pod"`
			PodUID         string          `json:"podUid"`
			Node           string          `json:"node"`
			TTLSeconds     int64           `json:"ttlSeconds"`
			Alg            string          `json:"alg"`
			Claims         map[string]any  `json:"claims"`
			Forge          string          `json:"forge"`
		}
		if aerr := decodeControl(w, r, &in); aerr != nil {
			writeError(w, aerr)
			return
		}
		spec := TokenSpec{
			Subject: in.Subject, Namespace: in.Namespace, ServiceAccount: in.ServiceAccount,
			Pod: in.Pod, PodUID: in.PodUID, Node: in.Node, Alg: in.Alg, Claims: in.Claims,
		}
		if len(in.Audience) > 0 {
			var one string
			if err := json.Unmarshal(in.Audience, &one); err == nil {
				spec.Audience = []string{one}
			} else if err := json.Unmarshal(in.Audience, &spec.Audience); err != nil {
				writeError(w, invalid("audience: want a string or an array of strings"))
				return
			}
		}
		const maxTTL = 10 * 365 * 24 * 3600
		switch {
		case in.TTLSeconds < -maxTTL || in.TTLSeconds > maxTTL:
			writeError(w, invalid("ttlSeconds out of range"))
			return
		case in.Alg != "" && in.Alg != RS256 && in.Alg != ES256:
			writeError(w, invalid("alg must be RS256 or ES256"))
			return
		}
		// Zero means the default hour; a negative TTL makes a token that
		// expired that long after it was issued.
		spec.TTL = time.Duration(in.TTLSeconds) * time.Second
		forge, forged := forgeries[in.Forge]
		if in.Forge != "" && !forged {
			writeError(w, invalid("forge must be one of alg-none, hmac-public-key, foreign-key, unknown-kid, tampered"))
			return
		}
		iss := own(w)
		if iss == nil {
			return
		}
		tok := ""
		if forged {
			tok = iss.Forge(spec, forge)
		} else {
			tok = iss.Token(spec)
		}
		writeJSON(w, http.StatusOK, map[string]string{"token": tok})
	})
	r.Post(controlPrefix+"/oidc-rotate", func(w http.ResponseWriter, _ *http.Request) {
		iss := own(w)
		if iss == nil {
			return
		}
		prev, err := iss.Rotate()
		if err != nil {
			writeError(w, errorf(CodeInternal, "rotate: %v", err))
			return
		}
		writeJSON(w, http.StatusOK, map[string][]string{
			"current":  {iss.CurrentKeyID(RS256), iss.CurrentKeyID(ES256)},
			"previous": prev,
		})
	})
	r.Post(controlPrefix+"/oidc-retire", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			KeyID string `json:"kid"`
		}
		if aerr := decodeControl(w, r, &in); aerr != nil {
			writeError(w, aerr)
			return
		}
		iss := own(w)
		if iss == nil {
			return
		}
		if err := iss.Retire(in.KeyID); err != nil {
			writeError(w, invalid("%v", err))
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
	})
}
