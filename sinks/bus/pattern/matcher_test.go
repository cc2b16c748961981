package pattern

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"unsafe"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"go.uber.org/goleak"
)

func mustParse(t testing.TB, src string) *Pattern {
	t.Helper()
	p, err := Parse(src)
	if err != nil {
		t.Fatalf("Parse(%s): %v", src, err)
	}
	return p
}

func newEvent(t testing.TB, typ string, data any) *cloudevents.Event {
	t.Helper()
	e := cloudevents.NewEvent()
	e.SetID("1")
	e.SetSource("/orders")
	e.SetType(typ)
	if data != nil {
		if err := e.SetData(cloudevents.ApplicationJSON, data); err != nil {
			t.Fatal(err)
		}
	}
	return &e
}

func TestMatchReturnsEachRuleOnceInAddOrder(t *testing.T) {
	b := NewBuilder()
	for _, r := range []struct{ id, src string }{
		{"c", `{"type":["order.created"]}`},
		{"a", `{"$or":[{"type":[{"prefix":"order."}]},{"source":["/orders"]}]}`}, // both alternatives match
		{"none", `{"type":["other"]}`},
		{"b", `{"data":{"amount":[{"numeric":[">",10]}],"tags":["x","y"]}}`}, // two tags match
	} {
		if err := b.Add(r.id, mustParse(t, r.src)); err != nil {
			t.Fatal(err)
		}
	}
	m := b.Build()
	got := m.Match(newEvent(t, "order.created", map[string]any{"amount": 12, "tags": []any{"x", "y"}}))
	if want := []string{"c", "a", "b"}; !slices.Equal(got, want) {
		t.Fatalf("Match = %v, want %v", got, want)
	}
	if got := m.Match(newEvent(t, "other", nil)); !slices.Equal(got, []string{"a", "none"}) {
		t.Fatalf("Match = %v, want [a none]", got)
	}
	if m.Len() != 4 {
		t.Fatalf("Len = %d", m.Len())
	}
}

func TestBuilderErrors(t *testing.T) {
	b := NewBuilder()
	p := mustParse(t, `{"type":["x"]}`)
	if err := b.Add("r", p); err != nil {
		t.Fatal(err)
	}
	if err := b.Add("r", p); !errors.Is(err, ErrDuplicateRule) {
		t.Errorf("duplicate id: %v", err)
	}
	if err := b.Add("s", nil); !errors.Is(err, ErrNilPattern) {
		t.Errorf("nil pattern: %v", err)
	}
}

func TestBuildSnapshotsTheRules(t *testing.T) {
	b := NewBuilder()
	_ = b.Add("first", mustParse(t, `{"type":["x"]}`))
	m1 := b.Build()
	_ = b.Add("second", mustParse(t, `{"type":["x"]}`))
	m2 := b.Build()
	e := newEvent(t, "x", nil)
	if got := m1.Match(e); !slices.Equal(got, []string{"first"}) {
		t.Errorf("first matcher = %v", got)
	}
	if got := m2.Match(e); !slices.Equal(got, []string{"first", "second"}) {
		t.Errorf("second matcher = %v", got)
	}
}

func TestEmptyMatcher(t *testing.T) {
	if got := NewBuilder().Build().Match(newEvent(t, "x", map[string]any{"a": 1})); got != nil {
		t.Fatalf("Match = %v", got)
	}
}

// TestManyRulesAgreeWithReference is a deterministic, larger-scale
// differential test: thousands of generated rules of every kind sharing
// fields and values (so the automaton shares states and indexes), against
// events drawn from the same vocabulary.
func TestManyRulesAgreeWithReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	types := []string{"order.created", "order.paid", "order.cancelled", "user.signup", "user.deleted"}
	regions := []string{"eu-west-1", "EU-West-2", "us-east-1", "ap-south-1"}
	cond := func() string {
		switch rng.IntN(9) {
		case 0:
			return fmt.Sprintf(`"region":[%q]`, regions[rng.IntN(len(regions))])
		case 1:
			return fmt.Sprintf(`"region":[{"prefix":{"equals-ignore-case":%q}}]`, regions[rng.IntN(len(regions))][:rng.IntN(5)+1])
		case 2:
			return fmt.Sprintf(`"data":{"amount":[{"numeric":[">",%d,"<=",%d]}]}`, rng.IntN(50), 50+rng.IntN(50))
		case 3:
			return fmt.Sprintf(`"data":{"status":[{"anything-but":[%q,%q]}]}`, []string{"new", "open"}[rng.IntN(2)], []string{"closed", "held"}[rng.IntN(2)])
		case 4:
			return fmt.Sprintf(`"data":{"coupon":[{"exists":%v}]}`, rng.IntN(2) == 0)
		case 5:
			return fmt.Sprintf(`"data":{"items":{"sku":[{"wildcard":"sku-%d*"}],"qty":[{"numeric":[">=",%d]}]}}`, rng.IntN(5), rng.IntN(4))
		case 6:
			return fmt.Sprintf(`"ip":[{"cidr":"10.%d.0.0/16"}]`, rng.IntN(3))
		case 7:
			return fmt.Sprintf(`"$or":[{"data":{"amount":[%d]}},{"data":{"status":[{"suffix":%q}]}}]`, rng.IntN(100), []string{"n", "d", "ld"}[rng.IntN(3)])
		}
		return fmt.Sprintf(`"data":{"customer":[{"equals-ignore-case":"C%d"}]}`, rng.IntN(20))
	}
	b := NewBuilder()
	var pats []*Pattern
	for i := range 3000 {
		parts := []string{fmt.Sprintf(`"type":[%q]`, types[rng.IntN(len(types))])}
		for range rng.IntN(3) {
			parts = append(parts, cond())
		}
		src := "{" + strings.Join(parts, ",") + "}"
		p, err := Parse(src)
		if err != nil { // two conditions on the same key: a duplicate key
			continue
		}
		if err := b.Add(fmt.Sprint("r", i), p); err != nil {
			t.Fatal(err)
		}
		pats = append(pats, p)
	}
	m := b.Build()
	b.linearMax = 0 // every transition through the indexes
	indexed := b.Build()
	matched := 0
	for range 300 {
		data := map[string]any{
			"amount":   rng.IntN(120),
			"status":   []string{"new", "open", "closed", "held", "paid"}[rng.IntN(5)],
			"customer": fmt.Sprint("c", rng.IntN(20)),
		}
		if rng.IntN(2) == 0 {
			data["coupon"] = "X"
		}
		var items []any
		for range rng.IntN(4) {
			items = append(items, map[string]any{"sku": fmt.Sprintf("sku-%d-%d", rng.IntN(5), rng.IntN(9)), "qty": rng.IntN(5)})
		}
		data["items"] = items
		e := newEvent(t, types[rng.IntN(len(types))], data)
		e.SetExtension("region", regions[rng.IntN(len(regions))])
		e.SetExtension("ip", fmt.Sprintf("10.%d.1.1", rng.IntN(4)))
		got := m.Match(e)
		var want []string
		obj := EventObject(e)
		for i, p := range pats {
			if ReferenceMatchObject(p, obj) {
				want = append(want, m.ids[i])
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("Match = %v\nreference = %v", got, want)
		}
		if viaIndexes := indexed.Match(e); !slices.Equal(viaIndexes, want) {
			t.Fatalf("indexed Match = %v\nreference = %v", viaIndexes, want)
		}
		matched += len(got)
	}
	if matched == 0 {
		t.Fatal("no event matched any rule: the test exercises nothing")
	}
}

// TestConcurrentMatch shares one Matcher between goroutines (run with
// -race); each must get the answers a lone caller gets.
func TestConcurrentMatch(t *testing.T) {
	defer goleak.VerifyNone(t)
	b := NewBuilder()
	for i := range 50 {
		_ = b.Add(fmt.Sprint("r", i), mustParse(t, fmt.Sprintf(`{"data":{"n":[{"numeric":[">=",%d]}],"tags":{"k":[{"anything-but":"t%d"}]}}}`, i, i%5)))
	}
	m := b.Build()
	events := make([]*cloudevents.Event, 20)
	want := make([][]string, len(events))
	for i := range events {
		events[i] = newEvent(t, "x", map[string]any{"n": i * 3, "tags": []any{map[string]any{"k": fmt.Sprint("t", i%5)}}})
		want[i] = m.Match(events[i])
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range 200 {
				i := (g + round) % len(events)
				if got := m.Match(events[i]); !slices.Equal(got, want[i]) {
					errs <- fmt.Sprintf("event %d: %v, want %v", i, got, want[i])
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestFlatten(t *testing.T) {
	e := newEvent(t, "t", map[string]any{"a.b": 1, "x": map[string]any{"y": []any{true, nil, "s", map[string]any{"z": 2.5}}}})
	f, err := Flatten(e)
	if err != nil {
		t.Fatal(err)
	}
	want := []Field{
		{`data.a\.b`, 1.0}, {"data.x.y", true}, {"data.x.y", nil}, {"data.x.y", "s"}, {"data.x.y.z", 2.5},
		{"datacontenttype", "application/json"}, {"id", "1"}, {"source", "/orders"}, {"specversion", "1.0"}, {"type", "t"},
	}
	if got := f.Fields(); !slices.Equal(got, want) {
		t.Fatalf("Fields =\n%v\nwant\n%v", got, want)
	}
	if f.Len() != len(want) {
		t.Fatalf("Len = %d", f.Len())
	}

	bad := newEvent(t, "t", nil)
	bad.SetDataContentType("application/json")
	bad.DataEncoded = []byte(`{"a":`)
	f, err = Flatten(bad)
	if !errors.Is(err, ErrInvalidData) {
		t.Fatalf("invalid data: err = %v", err)
	}
	for _, fld := range f.Fields() {
		if fld.Path == "data" || strings.HasPrefix(fld.Path, "data.") {
			t.Fatalf("invalid data was flattened: %v", fld)
		}
	}
}

// TestJSONDepthLimit checks that the scanner and the reference decoder
// draw the line where encoding/json does.
func TestJSONDepthLimit(t *testing.T) {
	for _, depth := range []int{maxJSONDepth, maxJSONDepth + 1} {
		doc := []byte(strings.Repeat("[", depth) + strings.Repeat("]", depth))
		e := newEvent(t, "t", nil)
		e.SetDataContentType("application/json")
		e.DataEncoded = doc
		_, flatErr := Flatten(e)
		_, refErr := decodeJSON(doc)
		valid := depth <= maxJSONDepth
		if (flatErr == nil) != valid || (refErr == nil) != valid {
			t.Errorf("depth %d: Flatten error %v, reference error %v, want valid=%v", depth, flatErr, refErr, valid)
		}
	}
}

// TestStateFitsACacheLine guards the layout the walk relies on: a state
// with its inline condition is one 64-byte line, and neither it nor a
// linear condition holds a pointer for the garbage collector to follow.
func TestStateFitsACacheLine(t *testing.T) {
	if n := unsafe.Sizeof(state{}); n != 64 {
		t.Errorf("state is %d bytes, want 64", n)
	}
	if n := unsafe.Sizeof(linearCond{}); n != 40 {
		t.Errorf("linearCond is %d bytes, want 40", n)
	}
}

// TestSourceStringIsTheSDKs: the fast path for bare absolute paths gives
// what the SDK's Source getter (url.URL.String) gives, for every shape.
func TestSourceStringIsTheSDKs(t *testing.T) {
	for _, s := range []string{
		"/acme/orders", "/a b/ü", "/a:b/c", "/%41%2Fb", "/", "/p?q=1", "/p#frag", "/p?",
		"rel/path", "a:b", "urn:uuid:1", "https://h.example/p", "//host/p", "mailto:x@y", "*", "",
	} {
		e := cloudevents.NewEvent()
		e.SetSource(s)
		ec, ok := e.Context.(*event.EventContextV1)
		if !ok {
			t.Fatal("not a 1.0 context")
		}
		if got, want := sourceString(&ec.Source.URL), e.Source(); got != want {
			t.Errorf("source %q: sourceString = %q, the SDK says %q", s, got, want)
		}
	}
}
