package tenancy

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

type item struct {
	flow string
	seq  int
}

// TestDRRProportionalShares: with every flow backlogged, long-run shares
// match the weights within a few percent, for random weights and quanta.
func TestDRRProportionalShares(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 1))
		nFlows := 2 + rng.IntN(6)
		quantum := 1 + rng.IntN(4)
		d := NewDRR[item](quantum)
		weights := map[string]int{}
		total := 0
		for i := range nFlows {
			k := fmt.Sprintf("f%d", i)
			weights[k] = 1 + rng.IntN(8)
			total += weights[k]
			d.SetWeight(k, weights[k])
		}
		const served = 20000
		for k := range weights {
			for i := range served {
				d.Push(k, item{k, i})
			}
		}
		counts := map[string]int{}
		next := map[string]int{}
		for range served {
			k, it, ok := d.Next()
			if !ok {
				t.Fatalf("seed %d: Next found nothing with backlog", seed)
			}
			if it.flow != k || it.seq != next[k] {
				t.Fatalf("seed %d: got %+v from %s, want seq %d (FIFO per flow)", seed, it, k, next[k])
			}
			next[k]++
			counts[k]++
		}
		for k, w := range weights {
			want := float64(served) * float64(w) / float64(total)
			if dev := math.Abs(float64(counts[k])-want) / want; dev > 0.03 {
				t.Errorf("seed %d: flow %s weight %d/%d got %d of %d, want %.0f (off by %.1f%%)",
					seed, k, w, total, counts[k], served, want, 100*dev)
			}
		}
	}
}

// TestDRRNoStarvation: under random pushes, a backlogged flow waits for at
// most one turn of every other flow (Σ weight×quantum items) between two
// services.
func TestDRRNoStarvation(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 2))
		quantum := 1 + rng.IntN(3)
		d := NewDRR[item](quantum)
		keys := []string{"a", "b", "c", "d"}
		weights := map[string]int{}
		sum := 0
		for _, k := range keys {
			weights[k] = 1 + rng.IntN(5)
			sum += weights[k]
			d.SetWeight(k, weights[k])
		}
		backlog := map[string]int{}
		waited := map[string]int{} // items served to others while k was backlogged
		for step := range 50000 {
			if rng.IntN(3) > 0 { // pushes outpace service now and then
				k := keys[rng.IntN(len(keys))]
				d.Push(k, item{k, step})
				backlog[k]++
				continue
			}
			k, _, ok := d.Next()
			if !ok {
				continue
			}
			backlog[k]--
			waited[k] = 0
			for _, o := range keys {
				if o == k || backlog[o] == 0 {
					continue
				}
				waited[o]++
				if bound := (sum - weights[o]) * quantum; waited[o] > bound {
					t.Fatalf("seed %d: flow %s (backlog %d) waited %d items, bound %d", seed, o, backlog[o], waited[o], bound)
				}
			}
		}
		if d.Len() != backlog["a"]+backlog["b"]+backlog["c"]+backlog["d"] {
			t.Fatalf("seed %d: Len = %d, backlog %v", seed, d.Len(), backlog)
		}
	}
}

// TestDRRIdleFlowGetsNoBurst: a flow idle while others were served does not
// bank credit: when it returns it gets at most weight×quantum items before
// the others are served again, and its share from then on is its weight's.
func TestDRRIdleFlowGetsNoBurst(t *testing.T) {
	const quantum = 2
	d := NewDRR[item](quantum)
	d.SetWeight("busy1", 1)
	d.SetWeight("busy2", 1)
	d.SetWeight("idle", 3)
	for i := range 10000 {
		d.Push("busy1", item{"busy1", i})
		d.Push("busy2", item{"busy2", i})
	}
	for range 5000 { // the idle flow has nothing during this
		d.Next()
	}
	for i := range 1000 {
		d.Push("idle", item{"idle", i})
	}
	run, maxRun, idleServed := 0, 0, 0
	for range 500 {
		k, _, _ := d.Next()
		if k == "idle" {
			run++
			idleServed++
			maxRun = max(maxRun, run)
		} else {
			run = 0
		}
	}
	if maxRun > 3*quantum {
		t.Fatalf("returning flow served %d in a row, want ≤ weight×quantum = %d", maxRun, 3*quantum)
	}
	// Weights 3:1:1 → 60 % once it is back.
	if share := float64(idleServed) / 500; math.Abs(share-0.6) > 0.03 {
		t.Fatalf("returning flow's share = %.2f, want 0.60", share)
	}
}

func TestDRRPauseResumeRemove(t *testing.T) {
	d := NewDRR[int](1)
	d.Push("a", 1)
	d.Push("a", 2)
	d.Push("b", 10)
	select {
	case <-d.Ready():
	default:
		t.Fatalf("Ready not signalled after Push")
	}
	d.Pause("a")
	if k, v, _ := d.Next(); k != "b" || v != 10 {
		t.Fatalf("Next with a paused = %s %d, want b 10", k, v)
	}
	if _, _, ok := d.Next(); ok {
		t.Fatalf("Next returned an item of a paused flow")
	}
	d.Push("a", 3) // pushing keeps a paused flow paused
	if _, _, ok := d.Next(); ok {
		t.Fatalf("Push resumed a paused flow")
	}
	if d.Len() != 3 || d.LenOf("a") != 3 {
		t.Fatalf("Len = %d, LenOf(a) = %d; want 3, 3", d.Len(), d.LenOf("a"))
	}
	<-d.Ready()
	d.Resume("a")
	select {
	case <-d.Ready():
	default:
		t.Fatalf("Ready not signalled after Resume")
	}
	if k, v, _ := d.Next(); k != "a" || v != 1 {
		t.Fatalf("after Resume = %s %d, want a 1", k, v)
	}
	if got := d.Remove("a"); !slices.Equal(got, []int{2, 3}) {
		t.Fatalf("Remove = %v, want [2 3]", got)
	}
	if d.Len() != 0 || d.Remove("a") != nil {
		t.Fatalf("after Remove: Len %d", d.Len())
	}
	if _, _, ok := d.Next(); ok {
		t.Fatalf("Next after Remove returned an item")
	}
	d.Resume("never-seen") // no-op
}

func TestDRRNextIf(t *testing.T) {
	d := NewDRR[int](1)
	for i := range 3 {
		d.Push("full", i)
		d.Push("open", 100+i)
	}
	refused := map[string]int{}
	admit := func(k string) bool {
		if k == "full" {
			refused[k]++
			return false
		}
		return true
	}
	var got []int
	for {
		_, v, ok := d.NextIf(admit)
		if !ok {
			break
		}
		got = append(got, v)
	}
	if !slices.Equal(got, []int{100, 101, 102}) || refused["full"] != 1 {
		t.Fatalf("got %v with %d refusals; want the open flow only, one refusal (then paused)", got, refused["full"])
	}
	if d.LenOf("full") != 3 {
		t.Fatalf("refused flow lost items: %d", d.LenOf("full"))
	}
	d.Resume("full")
	if k, v, ok := d.NextIf(func(string) bool { return true }); !ok || k != "full" || v != 0 {
		t.Fatalf("after Resume = %s %d %v", k, v, ok)
	}
}

func TestFIFOCompaction(t *testing.T) {
	var q fifo[int]
	next := 0
	for i := range 10000 {
		q.push(i)
		if i%3 != 0 {
			if v := q.pop(); v != next {
				t.Fatalf("pop = %d, want %d", v, next)
			}
			next++
		}
	}
	if cap(q.items) > 8192 {
		t.Fatalf("backing array grew to %d for %d live items", cap(q.items), q.len())
	}
	for q.len() > 0 {
		if v := q.pop(); v != next {
			t.Fatalf("pop = %d, want %d", v, next)
		}
		next++
	}
}
