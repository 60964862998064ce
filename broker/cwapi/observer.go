package cwapi

import (
	"context"
	"errors"
	"net"
	"time"
)

// UpstreamObserver receives every call a Client makes to the CoreWeave API.
// endpoint is one of the Path constants; outcome is one of a fixed set:
//
//   - "ok";
//   - the gRPC code name upstream's error body gives (e.g.
//     "UNAUTHENTICATED", "UNAVAILABLE");
//   - else the HTTP status class: "http_3xx", "http_4xx", "http_5xx",
//     "http_other";
//   - for a call without an HTTP answer: "timeout", "canceled",
//     "network"; for a 2xx reply that is not a usable key: "bad_reply".
//
// took runs from sending the request to reading the whole reply.
// Implementations must be safe for concurrent use.
type UpstreamObserver interface {
	UpstreamCall(endpoint, outcome string, took time.Duration)
}

// nopObserver is the default: it observes nothing.
type nopObserver struct{}

func (nopObserver) UpstreamCall(string, string, time.Duration) {}

// upstreamOutcome classifies the result of one upstream call for
// UpstreamObserver. Every value it returns is a constant.
func upstreamOutcome(err error) string {
	if err == nil {
		return "ok"
	}
	var api *APIError
	if errors.As(err, &api) {
		if api.Code > 0 && api.Code < len(grpcCodeNames) {
			return grpcCodeNames[api.Code]
		}
		switch api.StatusCode / 100 {
		case 3:
			return "http_3xx"
		case 4:
			return "http_4xx"
		case 5:
			return "http_5xx"
		default:
			return "http_other"
		}
	}
	var ne net.Error
	switch {
	case errors.Is(err, ErrBadReply):
		return "bad_reply"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	default:
		return "network"
	}
}
