package main

import (
	"context"
	"fmt"
	"time"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/cwapi"
	"github.com/cwcreds/cwcreds/broker/idtoken"
	"github.com/cwcreds/cwcreds/config"
)

// workloadSpec wires a workload-oidc profile: how a caller's token is
// checked before any upstream call, and how it buys a key.
//
// SHARE=token reads the token's claims and checks issuer, audience and
// validity times; the signature is upstream's to verify at the mint, and
// only the holder of that exact token reaches its key. SHARE=identity
// verifies the signature against the issuer's keys as well, since every
// token of a subject then reaches the subject's key.
func workloadSpec(cfg *config.Config, p config.Profile, client *cwapi.Client) (*broker.WorkloadSpec, error) {
	policy := idtoken.Policy{Issuers: p.Issuers, Audience: p.Audience, Leeway: idtoken.DefaultLeeway}
	if err := policy.Validate(); err != nil {
		return nil, fmt.Errorf("profile %q: %w", p.Name, err)
	}
	check := func(_ context.Context, raw string) (*idtoken.Claims, error) {
		c, err := idtoken.Parse(raw)
		if err != nil {
			return nil, err
		}
		if err := policy.Check(c, time.Now()); err != nil {
			return nil, err
		}
		return c, nil
	}
	share := p.Share == config.ShareIdentity
	if share {
		v, err := idtoken.NewVerifier(policy, idtoken.VerifierOptions{JWKSURL: p.JWKSURL})
		if err != nil {
			return nil, fmt.Errorf("CWCREDS_PROFILE_%s_JWKS_URL or _ISSUERS: %w", p.EnvName, err)
		}
		check = v.Verify
	}
	base := cwapi.AuditAttributes(cfg.NodeName, p.Name)
	return &broker.WorkloadSpec{
		ShareIdentity: share,
		Check: func(ctx context.Context, raw string) (broker.Identity, error) {
			c, err := check(ctx, raw)
			if err != nil {
				return broker.Identity{}, err
			}
			return broker.Identity{Issuer: c.Issuer, Subject: c.Subject, Namespace: c.Namespace,
				ServiceAccount: c.ServiceAccount, Pod: c.Pod, Node: c.Node, Expires: c.Expiry}, nil
		},
		Mint: func(ctx context.Context, token string, id broker.Identity) (*cwapi.Credentials, error) {
			attrs := cwapi.WorkloadAttributes(base, id.Namespace, id.ServiceAccount, id.Pod)
			return client.CreateAccessKeyFromOIDC(ctx, p.OrgID, token, p.Duration, attrs)
		},
	}, nil
}
