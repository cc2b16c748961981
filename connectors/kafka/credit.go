package kafka

import (
	"sync"

	"github.com/sluicehq/sluice/connectors"
)

var _ connectors.CreditFollower = (*Source)(nil)

// credit splits the runtime's credit (connectors.CreditFollower) across the
// partitions this member owns: each lane may hold max(1, credit/lanes)
// messages delivered and not yet acknowledged, and — whatever the credit —
// at most window delivered and not yet committable. Before the first
// SetCredit every lane has its whole window.
//
// Ownership: lane goroutines join and leave; SetCredit (the engine, one
// goroutine at a time) sets the total; any of them may call perLane. Every
// change wakes the joined lanes, so that one blocked on a full window
// re-checks its share.
type credit struct {
	window int

	mu    sync.Mutex
	total int // 0: not set, the window alone bounds each lane
	lanes map[*lane]struct{}
}

func newCredit(window int) *credit {
	return &credit{window: window, lanes: map[*lane]struct{}{}}
}

// SetCredit sets the total read-ahead of this source across its owned
// partitions (n < 1 counts as 1). A lane over its new share delivers
// nothing more until acks bring it under; one under it resumes at once.
// sarama's per-partition buffers (ChannelBufferSize records) and fetch
// sizes stay as configured: see "Memory bound" in docs/connectors/kafka.md.
func (s *Source) SetCredit(n int) { s.credit.set(max(n, 1)) }

func (c *credit) set(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total = n
	c.wakeLocked()
}

// join counts l among the owned lanes; leave undoes it.
func (c *credit) join(l *lane) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lanes[l] = struct{}{}
	c.wakeLocked()
}

func (c *credit) leave(l *lane) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.lanes, l)
	c.wakeLocked()
}

// perLane is the share of the credit a lane has now: how many messages
// it may hold delivered and not acknowledged.
func (c *credit) perLane() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.total == 0 {
		return c.window
	}
	return min(c.window, max(1, c.total/max(len(c.lanes), 1)))
}

func (c *credit) wakeLocked() {
	for l := range c.lanes {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}
