package broker

// Observer receives what a Cache does, for metrics. NewCache asks it once
// for each profile's ProfileObserver and keeps the result, so the hit path
// makes one method call on a value resolved in advance: no label lookup, no
// allocation. Implementations must be safe for concurrent use and must not
// block.
type Observer interface {
	Profile(name string) ProfileObserver
}

// ProfileObserver receives one profile's cache events.
type ProfileObserver interface {
	// Hit: Get served the cached key, and the profile's last mint succeeded.
	Hit()
	// StaleHit: Get served the cached key, which is still valid, while
	// refreshing it is failing (the last mint failed).
	StaleHit()
	// Miss: Get found no key it could serve; it waited for a mint, or
	// refused at once while the profile backs off.
	Miss()
	// MintStarted is called when an upstream mint starts, with what
	// started it ("request", "refresh" or "revoke"); MintDone when it ends,
	// with nil on success.
	MintStarted(trigger string)
	MintDone(err error)
	// Workload profiles only. IdentityAdded: a new identity entered the
	// cache; IdentityEvicted: one left it, why being EvictExpired,
	// EvictLRU or EvictRemoved; TokenRefused: WorkloadSpec.Check refused a
	// token with err (its reason is the Check's to classify).
	IdentityAdded()
	IdentityEvicted(why string)
	TokenRefused(err error)
}

// nopObserver is the default: it observes nothing.
type nopObserver struct{}

func (nopObserver) Profile(string) ProfileObserver { return nopObserver{} }
func (nopObserver) Hit()                           {}
func (nopObserver) StaleHit()                      {}
func (nopObserver) Miss()                          {}
func (nopObserver) MintStarted(string)             {}
func (nopObserver) MintDone(error)                 {}
func (nopObserver) IdentityAdded()                 {}
func (nopObserver) IdentityEvicted(string)         {}
func (nopObserver) TokenRefused(error)             {}
