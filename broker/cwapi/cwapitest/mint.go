package cwapitest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

const (
	upperAlnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	lowerAlnum = "abcdefghijklmnopqrstuvwxyz0123456789"
)

// mintRequest is a validated request for a key.
type mintRequest struct {
	principal, orgID string
	attrs            map[string]string
	ttl              time.Duration // 0: permanent
	container        bool          // reply in the PascalCase container shape
}

// mintFunc authenticates and validates a minting request.
type mintFunc func(w http.ResponseWriter, r *http.Request) (mintRequest, *apiError)

// mintReply is the camelCase reply of the POST mints.
type mintReply struct {
	AccessKeyID   string            `json:"accessKeyId"`
	SecretKey     string            `json:"secretKey"`
	PrincipalName string            `json:"principalName"`
	Expiry        string            `json:"expiry"`
	Attributes    map[string]string `json:"attributes"`
}

// containerReply is the PascalCase, AWS-container-credentials reply of the
// GET mints.
type containerReply struct {
	AccessKeyID     string                   `json:"AccessKeyId"`
	SecretAccessKey string                   `json:"SecretAccessKey"`
	Token           string                   `json:"Token"`
	Expiration      string                   `json:"Expiration"`
	Attributes      map[string]string        `json:"attributes"`
	MultiAttributes map[string]attributeList `json:"multiAttributes"`
}

// attributeList is a multi-valued attribute; the emulator never emits any.
type attributeList struct {
	Values []string `json:"values"`
}

// minting wraps a minting endpoint: it counts the request and its time in
// flight, applies latency and faults, mints the key, calls OnMint, and
// writes the reply.
func (e *Emulator) minting(endpoint string, fn mintFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.requests[endpoint]++
		e.inFlight++
		e.maxInFlight = max(e.maxInFlight, e.inFlight)
		latency, replyDelay := e.latency, e.replyDelay
		e.mu.Unlock()
		defer func() {
			e.mu.Lock()
			e.inFlight--
			e.mu.Unlock()
		}()

		// Read the body before any wait: net/http notices a client that
		// hangs up, and cancels r.Context(), only once the body is consumed.
		data, aerr := readBody(w, r)
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(data))

		if !wait(r.Context(), latency) {
			writeError(w, errorf(CodeCanceled, "request cancelled"))
			return
		}
		if f, ok := e.takeFault(endpoint); ok {
			if !wait(r.Context(), f.Delay) {
				writeError(w, errorf(CodeCanceled, "request cancelled"))
				return
			}
			writeFault(w, f, endpoint)
			return
		}
		req, aerr := fn(w, r)
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		k, err := e.mint(endpoint, req)
		if err != nil {
			writeError(w, errorf(CodeInternal, "generate access key"))
			return
		}
		if e.onMint != nil {
			e.onMint(k)
		}
		if !wait(r.Context(), replyDelay) {
			// The key exists upstream but its only holder is gone.
			e.mu.Lock()
			e.orphaned[endpoint]++
			e.mu.Unlock()
			writeError(w, errorf(CodeCanceled, "request cancelled"))
			return
		}
		if req.container {
			writeJSON(w, http.StatusOK, containerReply{
				AccessKeyID: k.AccessKeyID, SecretAccessKey: k.SecretKey, Expiration: formatTime(k.Expiry),
				Attributes: k.Attributes, MultiAttributes: map[string]attributeList{},
			})
			return
		}
		writeJSON(w, http.StatusOK, mintReply{
			AccessKeyID: k.AccessKeyID, SecretKey: k.SecretKey, PrincipalName: k.Principal,
			Expiry: formatTime(k.Expiry), Attributes: k.Attributes,
		})
	}
}

// wait waits d, or less if ctx ends first; it reports whether ctx was
// still live when the wait ended. A d of 0 or less does not wait.
func wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// writeFault replies as the fault f says.
func writeFault(w http.ResponseWriter, f Fault, endpoint string) {
	if f.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(f.RetryAfter.Seconds())), 10))
	}
	if !f.Malformed {
		writeError(w, &apiError{status: f.Status, code: f.Code, msg: f.Message})
		return
	}
	body := f.Body
	if body == "" {
		body = `{"accessKeyId":"CW`
		if endpoint == EndpointAPIToken || endpoint == EndpointContainer {
			body = `{"AccessKeyId":"CW`
		}
	}
	writeRaw(w, http.StatusOK, []byte(body))
}

// mint stores a new key for req and returns a copy of it.
func (e *Emulator) mint(endpoint string, req mintRequest) (Key, error) {
	now := e.now()
	rec := &record{
		principal: req.principal, orgID: req.orgID, endpoint: endpoint,
		attrs: req.attrs, created: now,
	}
	if rec.attrs == nil {
		rec.attrs = map[string]string{}
	}
	if req.ttl > 0 {
		// The wire carries whole seconds; store exactly what is sent, so a
		// key never outlives the lifetime asked for.
		rec.expiry = now.UTC().Add(req.ttl).Truncate(time.Second)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for range 8 { // retry the (astronomically unlikely) id collision
		id, err := randomString(e.rand, upperAlnum, 14)
		if err != nil {
			return Key{}, err
		}
		if _, taken := e.keys["CW"+id]; taken {
			continue
		}
		secret, err := randomString(e.rand, lowerAlnum, 40)
		if err != nil {
			return Key{}, err
		}
		rec.id, rec.secret = "CW"+id, "cwo"+secret
		e.keys[rec.id] = rec
		e.order = append(e.order, rec)
		e.mints[endpoint]++
		return rec.key(now), nil
	}
	return Key{}, errors.New("could not find an unused access key id")
}

// randomString returns n characters drawn uniformly from alphabet (at most
// 256 characters) by rejection sampling. It gives up rather than loop
// forever on a degenerate reader.
func randomString(r io.Reader, alphabet string, n int) (string, error) {
	limit := 256 - 256%len(alphabet)
	out := make([]byte, 0, n)
	buf := make([]byte, n+n/2)
	for range 32 {
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		for _, b := range buf {
			if int(b) >= limit {
				continue
			}
			out = append(out, alphabet[int(b)%len(alphabet)])
			if len(out) == n {
				return string(out), nil
			}
		}
	}
	return "", errors.New("random source is not random")
}

// authenticate checks TokenAuth: "Authorization: Bearer <API token>".
func (e *Emulator) authenticate(r *http.Request) (Identity, *apiError) {
	vals := r.Header.Values("Authorization")
	switch {
	case len(vals) == 0 || vals[0] == "":
		return Identity{}, errorf(CodeUnauthenticated, "missing Authorization header")
	case len(vals) > 1:
		return Identity{}, errorf(CodeUnauthenticated, "more than one Authorization header")
	}
	token, ok := strings.CutPrefix(vals[0], "Bearer ")
	if !ok {
		return Identity{}, errorf(CodeUnauthenticated, `Authorization must be "Bearer <API access token>"`)
	}
	sum := sha256.Sum256([]byte(token))
	e.mu.Lock()
	id, ok := e.tokens[sum]
	e.mu.Unlock()
	if !ok || token == "" {
		return Identity{}, errorf(CodeUnauthenticated, "invalid API access token")
	}
	if id.Denied {
		return Identity{}, errorf(CodePermissionDenied, "permission denied")
	}
	return id, nil
}

// federatedTTL reads the durationSeconds of an OIDC or SAML POST.
func (e *Emulator) federatedTTL(f fields) (time.Duration, *apiError) {
	secs, _, aerr := f.uint32("durationSeconds", "duration_seconds")
	if aerr != nil {
		return 0, aerr
	}
	if secs == 0 {
		return e.defaultFederated, nil
	}
	return e.checkTTL(secs)
}

func (e *Emulator) checkTTL(secs uint32) (time.Duration, *apiError) {
	ttl := time.Duration(secs) * time.Second
	if ttl > e.maxDuration {
		return 0, invalid("durationSeconds must be at most %d", int64(e.maxDuration/time.Second))
	}
	return ttl, nil
}

// createAccessKey is POST /v1/cwobject/access-key.
func (e *Emulator) createAccessKey(w http.ResponseWriter, r *http.Request) (mintRequest, *apiError) {
	id, aerr := e.authenticate(r)
	if aerr != nil {
		return mintRequest{}, aerr
	}
	f, aerr := readFields(w, r)
	if aerr != nil {
		return mintRequest{}, aerr
	}
	secs, ok, aerr := f.uint32("durationSeconds", "duration_seconds")
	if aerr != nil {
		return mintRequest{}, aerr
	}
	if !ok {
		return mintRequest{}, invalid("duration required")
	}
	ttl, aerr := e.checkTTL(secs)
	if aerr != nil {
		return mintRequest{}, aerr
	}
	attrs, aerr := f.attributes()
	if aerr != nil {
		return mintRequest{}, aerr
	}
	return mintRequest{principal: id.Principal, orgID: id.OrgID, attrs: attrs, ttl: ttl}, nil
}

// createFromAPIToken is GET /v1/cwobject/temporary-credentials/api-token.
func (e *Emulator) createFromAPIToken(_ http.ResponseWriter, r *http.Request) (mintRequest, *apiError) {
	id, aerr := e.authenticate(r)
	if aerr != nil {
		return mintRequest{}, aerr
	}
	return mintRequest{principal: id.Principal, orgID: id.OrgID, ttl: FixedDuration, container: true}, nil
}

// createFromOIDC is POST /v1/cwobject/temporary-credentials/oidc.
func (e *Emulator) createFromOIDC(w http.ResponseWriter, r *http.Request) (mintRequest, *apiError) {
	f, aerr := readFields(w, r)
	if aerr != nil {
		return mintRequest{}, aerr
	}
	orgID, aerr := f.str("orgId", "org_id")
	if aerr != nil {
		return mintRequest{}, aerr
	}
	token, aerr := f.str("oidcToken", "oidc_token")
	if aerr != nil {
		return mintRequest{}, aerr
	}
	switch {
	case orgID == "":
		return mintRequest{}, invalid("orgId required")
	case token == "":
		return mintRequest{}, invalid("oidcToken required")
	}
	ttl, aerr := e.federatedTTL(f)
	if aerr != nil {
		return mintRequest{}, aerr
	}
	attrs, aerr := f.attributes()
	if aerr != nil {
		return mintRequest{}, aerr
	}
	principal, aerr := e.verifyOIDC(r.Context(), orgID, token)
	if aerr != nil {
		return mintRequest{}, aerr
	}
	return mintRequest{principal: principal, orgID: orgID, attrs: attrs, ttl: ttl}, nil
}

// createFromContainer is GET /v1/cwobject/temporary-credentials/oidc/{orgId}.
func (e *Emulator) createFromContainer(_ http.ResponseWriter, r *http.Request) (mintRequest, *apiError) {
	vals := r.Header.Values("Authorization")
	switch {
	case len(vals) == 0 || vals[0] == "":
		return mintRequest{}, errorf(CodeUnauthenticated, "missing Authorization header")
	case len(vals) > 1:
		return mintRequest{}, errorf(CodeUnauthenticated, "more than one Authorization header")
	case len(vals[0]) >= 7 && strings.EqualFold(vals[0][:7], "Bearer "):
		return mintRequest{}, errorf(CodeUnauthenticated, "Authorization must be the raw OIDC token, without a Bearer prefix")
	}
	orgID := chi.URLParam(r, "orgId")
	principal, aerr := e.verifyOIDC(r.Context(), orgID, vals[0])
	if aerr != nil {
		return mintRequest{}, aerr
	}
	return mintRequest{principal: principal, orgID: orgID, ttl: FixedDuration, container: true}, nil
}

// createFromSAML is POST /v1/cwobject/temporary-credentials/saml.
func (e *Emulator) createFromSAML(w http.ResponseWriter, r *http.Request) (mintRequest, *apiError) {
	f, aerr := readFields(w, r)
	if aerr != nil {
		return mintRequest{}, aerr
	}
	var orgID, configID, response string
	for _, p := range []struct {
		dst         *string
		camel, name string
	}{
		{&orgID, "orgId", "org_id"},
		{&configID, "configId", "config_id"},
		{&response, "samlResponse", "saml_response"},
	} {
		if *p.dst, aerr = f.str(p.camel, p.name); aerr != nil {
			return mintRequest{}, aerr
		}
		if *p.dst == "" {
			return mintRequest{}, invalid("%s required", p.camel)
		}
	}
	ttl, aerr := e.federatedTTL(f)
	if aerr != nil {
		return mintRequest{}, aerr
	}
	attrs, aerr := f.attributes()
	if aerr != nil {
		return mintRequest{}, aerr
	}
	e.mu.Lock()
	cfg, ok := e.samlConfigs[configID]
	e.mu.Unlock()
	if !ok || cfg.OrgID != orgID {
		return mintRequest{}, invalid("no SAML configuration %q in organization %q", clip(configID), clip(orgID))
	}
	role, err := samlRole(response)
	if err != nil {
		return mintRequest{}, invalid("invalid SAML response: %v", err)
	}
	return mintRequest{principal: "saml/" + role, orgID: orgID, attrs: attrs, ttl: ttl}, nil
}
