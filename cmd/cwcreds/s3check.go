package main

import (
	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/s3check"
	"github.com/cwcreds/cwcreds/config"
)

// newVerifier returns the S3 key check cfg asks for (CWCREDS_S3_ENDPOINT,
// CWCREDS_S3_REGION), or nil without one: then the fixed warm-up
// (CWCREDS_KEY_WARMUP) applies. httpClient nil means the default.
func newVerifier(cfg *config.Config, log zerolog.Logger, httpClient s3check.HTTPDoer) (*s3check.Checker, error) {
	if cfg.S3Endpoint == "" {
		return nil, nil
	}
	c, err := s3check.New(cfg.S3Endpoint, cfg.S3Region, func(o *s3check.Options) { o.HTTPClient = httpClient })
	if err != nil {
		return nil, &usageError{err}
	}
	log.Info().Str("s3_endpoint", cfg.S3Endpoint).Str("s3_region", cfg.S3Region).
		Dur("cold_wait_ms", broker.VerifyColdWait).Dur("propagation_limit_ms", broker.VerifyPropagationLimit).
		Msg("every new key is checked against S3 before it is served; CWCREDS_KEY_WARMUP does not apply")
	return c, nil
}
