package cwapitest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"

	"github.com/go-chi/chi/v5"
)

const (
	defaultListLimit = 100
	maxListLimit     = 1000
)

// accessKeyInfo is the AccessKeyInfo message; it never carries the secret.
type accessKeyInfo struct {
	AccessKeyID     string                   `json:"accessKeyId"`
	Status          string                   `json:"status"`
	PrincipalName   string                   `json:"principalName"`
	Attributes      map[string]string        `json:"attributes"`
	Expiry          string                   `json:"expiry"`
	OrgID           string                   `json:"orgId"`
	MultiAttributes map[string]attributeList `json:"multiAttributes"`
}

func (k Key) info() accessKeyInfo {
	return accessKeyInfo{
		AccessKeyID: k.AccessKeyID, Status: k.Status, PrincipalName: k.Principal,
		Attributes: k.Attributes, Expiry: formatTime(k.Expiry), OrgID: k.OrgID,
		MultiAttributes: map[string]attributeList{},
	}
}

// manageFunc serves a key-management endpoint for an authenticated
// identity and returns the 200 reply body.
type manageFunc func(w http.ResponseWriter, r *http.Request, id Identity) (any, *apiError)

// managing wraps a key-management endpoint: it counts the request,
// authenticates it, and writes the reply.
func (e *Emulator) managing(endpoint string, fn manageFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.requests[endpoint]++
		e.mu.Unlock()
		id, aerr := e.authenticate(r)
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		body, aerr := fn(w, r, id)
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		writeJSON(w, http.StatusOK, body)
	}
}

// listKeys is GET /v1/cwobject/access-key?offset&limit&status.
func (e *Emulator) listKeys(_ http.ResponseWriter, r *http.Request, id Identity) (any, *apiError) {
	q := r.URL.Query()
	offset, aerr := queryUint(q, "offset")
	if aerr != nil {
		return nil, aerr
	}
	limit, aerr := queryUint(q, "limit")
	if aerr != nil {
		return nil, aerr
	}
	switch {
	case limit == 0:
		limit = defaultListLimit
	case limit > maxListLimit:
		return nil, invalid("limit must be between 1 and %d", maxListLimit)
	}
	want := ""
	if s := q.Get("status"); s != "" {
		active, ok := parseStatusName(s) // a query parameter may also be a number
		if !ok {
			return nil, invalid("status must be ACCESS_KEY_STATUS_ACTIVE or ACCESS_KEY_STATUS_SUSPENDED")
		}
		want = StatusSuspended
		if active {
			want = StatusActive
		}
	}

	now := e.now()
	infos := []accessKeyInfo{}
	e.mu.Lock()
	defer e.mu.Unlock()
	skipped := uint64(0)
	for _, rec := range e.order {
		if uint64(len(infos)) == limit {
			break
		}
		if rec.orgID != id.OrgID || (want != "" && rec.status(now) != want) {
			continue
		}
		if skipped < offset {
			skipped++
			continue
		}
		infos = append(infos, rec.key(now).info())
	}
	return map[string][]accessKeyInfo{"info": infos}, nil
}

// queryUint reads an optional uint32 query parameter; absent reads as 0.
func queryUint(q url.Values, name string) (uint64, *apiError) {
	s := q.Get(name)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, invalid("%s must be an unsigned 32-bit integer", name)
	}
	return n, nil
}

// getKey is GET /v1/cwobject/access-key/{accessKeyId}.
func (e *Emulator) getKey(_ http.ResponseWriter, r *http.Request, id Identity) (any, *apiError) {
	k, ok := e.Key(chi.URLParam(r, "accessKeyId"))
	if !ok || k.OrgID != id.OrgID {
		return nil, errorf(CodeNotFound, "access key not found")
	}
	return map[string]accessKeyInfo{"info": k.info()}, nil
}

// revokeKey is POST /v1/cwobject/revoke-access-key/access-key. Revoking a
// revoked key succeeds again.
func (e *Emulator) revokeKey(w http.ResponseWriter, r *http.Request, id Identity) (any, *apiError) {
	f, aerr := readFields(w, r)
	if aerr != nil {
		return nil, aerr
	}
	keyID, aerr := f.str("accessKey", "access_key")
	if aerr != nil {
		return nil, aerr
	}
	if keyID == "" {
		return nil, invalid("accessKey required")
	}
	e.mu.Lock()
	rec, ok := e.keys[keyID]
	if !ok || rec.orgID != id.OrgID {
		e.mu.Unlock()
		return nil, errorf(CodeNotFound, "access key not found")
	}
	fresh := !rec.revoked
	rec.revoked = true
	e.mu.Unlock()
	if fresh && e.onRevoke != nil {
		e.onRevoke(keyID)
	}
	return struct{}{}, nil
}

// revokePrincipal is POST /v1/cwobject/revoke-access-key/principal: it
// revokes every key of the principal in the caller's organization.
func (e *Emulator) revokePrincipal(w http.ResponseWriter, r *http.Request, id Identity) (any, *apiError) {
	_, principal, aerr := readPrincipal(w, r)
	if aerr != nil {
		return nil, aerr
	}
	var revoked []string
	e.mu.Lock()
	for _, rec := range e.order {
		if rec.orgID == id.OrgID && rec.principal == principal && !rec.revoked {
			rec.revoked = true
			revoked = append(revoked, rec.id)
		}
	}
	e.mu.Unlock()
	if e.onRevoke != nil {
		for _, k := range revoked {
			e.onRevoke(k)
		}
	}
	return struct{}{}, nil
}

// updateStatus is PUT /v1/cwobject/access-key-status: it suspends or
// reactivates every unrevoked key the principal has in the caller's
// organization now. Keys minted later start active.
func (e *Emulator) updateStatus(w http.ResponseWriter, r *http.Request, id Identity) (any, *apiError) {
	f, principal, aerr := readPrincipal(w, r)
	if aerr != nil {
		return nil, aerr
	}
	raw, _ := f.raw("status")
	active, ok := parseStatusEnum(raw)
	if !ok {
		return nil, invalid("status must be ACCESS_KEY_STATUS_ACTIVE or ACCESS_KEY_STATUS_SUSPENDED")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, rec := range e.order {
		if rec.orgID == id.OrgID && rec.principal == principal && !rec.revoked {
			rec.suspended = !active
		}
	}
	return struct{}{}, nil
}

// parseStatusEnum reads an AccessKeyStatus enum as protojson does: a JSON
// string holding the name (prefixed or bare) or a JSON number. ok is false
// for anything else, including the zero value INVALID.
func parseStatusEnum(raw json.RawMessage) (active, ok bool) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if s == "1" || s == "2" {
			return false, false
		}
		return parseStatusName(s)
	}
	var n int
	if json.Unmarshal(raw, &n) == nil {
		return parseStatusName(strconv.Itoa(n))
	}
	return false, false
}

// parseStatusName reads an AccessKeyStatus name or number.
func parseStatusName(s string) (active, ok bool) {
	switch s {
	case "ACCESS_KEY_STATUS_ACTIVE", "ACTIVE", "1":
		return true, true
	case "ACCESS_KEY_STATUS_SUSPENDED", "SUSPENDED", "2":
		return false, true
	}
	return false, false
}

// readPrincipal reads a request body that names a principal (principalName,
// or principal_name), which is required, and returns its fields too.
func readPrincipal(w http.ResponseWriter, r *http.Request) (fields, string, *apiError) {
	f, aerr := readFields(w, r)
	if aerr != nil {
		return f, "", aerr
	}
	principal, aerr := f.str("principalName", "principal_name")
	if aerr != nil {
		return f, "", aerr
	}
	if principal == "" {
		return f, "", invalid("principalName required")
	}
	return f, principal, nil
}
