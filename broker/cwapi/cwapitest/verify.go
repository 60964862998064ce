package cwapitest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// jwksCacheTTL is how long the emulator trusts a fetched key set before it
// fetches it again; a token naming an unknown kid also makes it refetch.
const jwksCacheTTL = 5 * time.Minute

// maxDocBytes bounds a fetched discovery document or key set.
const maxDocBytes = 1 << 20

// issuerReg is a registered issuer with its key cache.
type issuerReg struct {
	cfg   OIDCIssuer
	cache *keyCache // for issuers whose keys are fetched over HTTP
}

// keyCache holds an issuer's fetched key set. mu is held across a fetch, so
// concurrent lookups that miss wait for one fetch instead of each starting
// their own.
type keyCache struct {
	mu      sync.Mutex
	set     jose.JSONWebKeySet
	fetched time.Time // zero: never fetched
}

// tokenIssuer reads the iss claim of a parsed, not yet verified token: it
// only selects which issuer's keys to verify with.
func tokenIssuer(jws *jose.JSONWebSignature) (string, bool) {
	var p struct {
		Iss string `json:"iss"`
	}
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &p); err != nil || p.Iss == "" {
		return "", false
	}
	return p.Iss, true
}

// verifyOIDC validates an OIDC token for orgID as CoreWeave does: a compact
// JWS signed with an allowed algorithm by a key the registered issuer
// publishes, with valid claims. It returns the principal. Every failure is
// 400/code 3 "Invalid token"; checkToken says why, for tests.
func (e *Emulator) verifyOIDC(ctx context.Context, orgID, token string) (string, *apiError) {
	c, err := e.checkToken(ctx, orgID, token)
	if err != nil {
		return "", invalid("Invalid token")
	}
	return "role/" + c.iss + ":" + c.sub, nil
}

func (e *Emulator) checkToken(ctx context.Context, orgID, token string) (jwtClaims, error) {
	jws, err := jose.ParseSignedCompact(token, verifyAlgs)
	if err != nil {
		return jwtClaims{}, fmt.Errorf("not a compact JWS with an allowed alg: %w", err)
	}
	iss, ok := tokenIssuer(jws)
	if !ok {
		return jwtClaims{}, errors.New("payload has no string iss")
	}
	e.mu.Lock()
	reg, ok := e.issuers[iss]
	e.mu.Unlock()
	if !ok {
		return jwtClaims{}, errors.New("issuer not registered")
	}
	if reg.cfg.OrgID != orgID {
		return jwtClaims{}, errors.New("issuer registered in another organization")
	}
	payload, err := e.verifySignature(ctx, iss, reg, jws)
	if err != nil {
		return jwtClaims{}, err
	}
	c, err := parseClaims(payload, e.now())
	if err != nil {
		return jwtClaims{}, err
	}
	if c.iss != iss || !c.hasAudience(reg.cfg.Audience) {
		return jwtClaims{}, errors.New("wrong iss or aud")
	}
	return c, nil
}

// verifySignature verifies jws with the issuer's key of its kid (or, with
// no kid, with each of its keys of the header's alg) and returns the payload.
func (e *Emulator) verifySignature(ctx context.Context, iss string, reg *issuerReg, jws *jose.JSONWebSignature) ([]byte, error) {
	hdr := jws.Signatures[0].Header
	keys, err := e.issuerKeys(ctx, iss, reg, hdr.KeyID)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if (k.Algorithm != "" && k.Algorithm != hdr.Algorithm) || (k.Use != "" && k.Use != "sig") || !k.IsPublic() {
			continue
		}
		if payload, err := jws.Verify(k); err == nil {
			return payload, nil
		}
	}
	return nil, errors.New("no published key verifies the signature")
}

// issuerKeys returns the issuer's keys with kid (all its keys if kid is
// empty). Fetched key sets are cached; a miss refetches.
func (e *Emulator) issuerKeys(ctx context.Context, iss string, reg *issuerReg, kid string) ([]jose.JSONWebKey, error) {
	pick := func(set jose.JSONWebKeySet) []jose.JSONWebKey {
		if kid == "" {
			return set.Keys
		}
		return set.Key(kid)
	}
	switch {
	case reg.cfg.Issuer != nil:
		return pick(reg.cfg.Issuer.KeySet()), nil
	case reg.cfg.Keys != nil:
		return pick(*reg.cfg.Keys), nil
	}
	c := reg.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	now := e.now()
	if !c.fetched.IsZero() && now.Sub(c.fetched) < jwksCacheTTL {
		if keys := pick(c.set); len(keys) > 0 {
			return keys, nil
		}
	}
	set, err := e.fetchKeySet(ctx, iss, reg.cfg.JWKSURL)
	if err != nil {
		return nil, err
	}
	c.set, c.fetched = set, now
	return pick(set), nil
}

// fetchKeySet GETs the issuer's JWKS, from jwksURL or, if empty, from the
// jwks_uri of its discovery document.
func (e *Emulator) fetchKeySet(ctx context.Context, iss, jwksURL string) (jose.JSONWebKeySet, error) {
	if jwksURL == "" {
		var doc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := e.getJSON(ctx, iss+DiscoveryPath, &doc); err != nil {
			return jose.JSONWebKeySet{}, fmt.Errorf("discovery: %w", err)
		}
		if doc.Issuer != iss || doc.JWKSURI == "" {
			return jose.JSONWebKeySet{}, errors.New("discovery document names another issuer or no jwks_uri")
		}
		jwksURL = doc.JWKSURI
	}
	var set jose.JSONWebKeySet
	if err := e.getJSON(ctx, jwksURL, &set); err != nil {
		return jose.JSONWebKeySet{}, fmt.Errorf("JWKS: %w", err)
	}
	return set, nil
}

func (e *Emulator) getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := e.httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxDocBytes+1))
	if err != nil {
		return err
	}
	if len(data) > maxDocBytes {
		return errors.New("document too large")
	}
	return json.Unmarshal(data, v)
}
