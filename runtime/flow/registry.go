package flow

import "sync"

// Registry holds one shared AIMD per function endpoint, so that every
// pipeline calling the same function draws from one limit (DESIGN §6: the
// limit is per function, not per pipeline). It is safe for concurrent use.
//
// Limiters live as long as the Registry: the set of endpoints is bounded by
// the configuration, and dropping a limiter on reload would forget what was
// learnt about the target.
type Registry struct {
	mu       sync.Mutex
	limiters map[string]*AIMD
}

// NewRegistry returns an empty Registry.
func NewRegistry() *Registry {
	return &Registry{limiters: make(map[string]*AIMD)}
}

// For returns the limiter for key (the function's endpoint URL), creating it
// from cfg on first use. The first config wins: later calls with a different
// cfg get the existing limiter unchanged, including its Recorder. Callers
// that need identical bounds for a shared function must agree on them in
// configuration.
func (r *Registry) For(key string, cfg Config) *AIMD {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l, ok := r.limiters[key]; ok {
		return l
	}
	l := NewAIMD(cfg)
	r.limiters[key] = l
	return l
}
