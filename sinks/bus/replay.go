package bus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/runtime/queue"
)

// Replay states.
const (
	ReplayRunning   = "running"
	ReplayCompleted = "completed"
	ReplayFailed    = "failed"
	ReplayCancelled = "cancelled" // Sluice stopped before the replay ended
)

// Errors of StartReplay.
var (
	// ErrNoArchive: the bus has no archive to replay from.
	ErrNoArchive = errors.New("the bus has no archive")
	// ErrUnknownRule: the replay names a rule the bus does not have.
	ErrUnknownRule = errors.New("no such rule")
	// ErrBadWindow: from is not before to.
	ErrBadWindow = errors.New("from must be before to")
)

// Replay describes one replay: the archived events stored in [From, To)
// put on the bus again, each with the ExtReplay extension set to ID (and,
// when Rule is set, for that rule's targets only).
type Replay struct {
	ID       string    `json:"id"`
	Bus      string    `json:"bus"`
	Rule     string    `json:"rule,omitempty"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	State    string    `json:"state"`
	Replayed int       `json:"replayed"` // events put on the bus so far
	// Through is the archive time of the last event put on the bus so far:
	// a replay cut short is finished by a replay from Through to the same
	// To, which puts again only the events archived at that very instant.
	Through  time.Time `json:"through,omitzero"`
	Error    string    `json:"error,omitempty"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
}

// maxReplays bounds the replays a bus remembers (the oldest finished ones
// are forgotten first).
const maxReplays = 100

// replays is a bus's replay history, in memory: a restart forgets it (a
// replay cut short by a stop is reported cancelled until then, and the log
// says how far it got; start one from its Through to finish it).
type replays struct {
	mu    sync.Mutex
	byID  map[string]*Replay
	order []string
}

func newReplays() *replays { return &replays{byID: map[string]*Replay{}} }

func (r *replays) add(rp *Replay) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.byID[rp.ID] = rp
	r.order = append(r.order, rp.ID)
	for i := 0; len(r.order) > maxReplays && i < len(r.order); {
		if id := r.order[i]; r.byID[id].State != ReplayRunning {
			delete(r.byID, id)
			r.order = append(r.order[:i], r.order[i+1:]...)
			continue
		}
		i++
	}
}

func (r *replays) update(id string, f func(*Replay)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rp := r.byID[id]; rp != nil {
		f(rp)
	}
}

// Replay returns a copy of the replay id of this bus.
func (b *Bus) Replay(id string) (Replay, bool) {
	b.replays.mu.Lock()
	defer b.replays.mu.Unlock()
	rp, ok := b.replays.byID[id]
	if !ok {
		return Replay{}, false
	}
	return *rp, true
}

// Replays lists the bus's remembered replays, oldest first.
func (b *Bus) Replays() []Replay {
	b.replays.mu.Lock()
	defer b.replays.mu.Unlock()
	out := make([]Replay, 0, len(b.replays.order))
	for _, id := range b.replays.order {
		out = append(out, *b.replays.byID[id])
	}
	return out
}

// replayBatch is how many archived events one put of a replay carries.
const replayBatch = 64

// StartReplay starts putting the archived events stored in [from, to) on
// the bus again, to every matching rule or, with rule set, to that rule's
// targets only, while everything else keeps running. It returns at once;
// follow the replay with Replay. Errors: ErrNoArchive, ErrUnknownRule,
// ErrBadWindow, ErrClosed.
func (b *Bus) StartReplay(from, to time.Time, rule string) (Replay, error) {
	switch {
	case b.archive == nil:
		return Replay{}, ErrNoArchive
	case rule != "" && b.router.byName[rule] == nil:
		return Replay{}, fmt.Errorf("%w %q on bus %s", ErrUnknownRule, rule, b.id)
	case !from.Before(to):
		return Replay{}, ErrBadWindow
	}
	var idb [8]byte
	_, _ = rand.Read(idb[:])
	rp := &Replay{
		ID: "r" + hex.EncodeToString(idb[:]), Bus: b.id, Rule: rule, From: from, To: to,
		State: ReplayRunning, Started: time.Now().UTC(),
	}
	s := b.set
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Replay{}, ErrClosed
	}
	s.bgWG.Add(1)
	s.mu.Unlock()
	b.replays.add(rp)
	out := *rp
	go func() {
		defer s.bgWG.Done()
		n, err := b.replay(s.bg, rp.ID, from, to, rule)
		b.replays.update(rp.ID, func(r *Replay) {
			r.Replayed = n
			r.Finished = time.Now().UTC()
			switch {
			case err == nil:
				r.State = ReplayCompleted
			case s.bg.Err() != nil || errors.Is(err, ErrClosed):
				r.State, r.Error = ReplayCancelled, err.Error()
			default:
				r.State, r.Error = ReplayFailed, err.Error()
			}
		})
		log := s.log.With("bus", b.id, "replay", rp.ID, "replayed", n)
		if err != nil {
			// The log outlives the in-memory record: say how to finish.
			resume := from
			if rec, _ := b.Replay(rp.ID); !rec.Through.IsZero() {
				resume = rec.Through
			}
			log.Warn("replay ended early; a replay from resume_from to 'to' finishes it", "err", err,
				"from", from, "to", to, "rule", rule, "resume_from", resume)
		} else {
			log.Info("replay completed")
		}
	}()
	return out, nil
}

// replay reads the archive window and puts it on the bus in batches.
// Failed puts are retried with backoff until ctx ends.
func (b *Bus) replay(ctx context.Context, id string, from, to time.Time, rule string) (int, error) {
	n := 0
	batch := make([]cloudevents.Event, 0, replayBatch)
	var last time.Time // archive time of batch's last event
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		bo := backoff.NewExponentialBackOff()
		bo.MaxInterval = 10 * time.Second
		for {
			err := b.Put(ctx, batch)
			if err == nil {
				break
			}
			if errors.Is(err, ErrClosed) || errors.Is(err, ErrInvalidEvent) || ctx.Err() != nil {
				return err
			}
			t := time.NewTimer(bo.NextBackOff())
			select {
			case <-ctx.Done():
				t.Stop()
				return err
			case <-t.C:
			}
		}
		n += len(batch)
		b.replays.update(id, func(r *Replay) { r.Replayed, r.Through = n, last.UTC() })
		batch = batch[:0]
		return nil
	}
	err := b.archive.Range(ctx, from, to, func(st *queue.Stored) error {
		var ev cloudevents.Event
		if err := json.Unmarshal(st.Data, &ev); err != nil {
			b.set.log.Error("replay: skipping an archived event that does not decode", "bus", b.id, "seq", st.Seq, "err", err)
			return nil
		}
		ev.SetExtension(ExtReplay, id)
		if rule != "" {
			ev.SetExtension(ExtReplayRule, rule)
		}
		batch = append(batch, ev)
		last = st.Time
		if len(batch) == replayBatch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	return n, err
}
