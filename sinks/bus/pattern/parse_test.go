package pattern

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

func TestParseErrorsCarryPaths(t *testing.T) {
	cases := []struct {
		name    string
		pattern any
		path    string
		msg     string
		segs    []any
	}{
		{"reversed numeric range", `{"data":{"amount":[{"numeric":[">",5,"<",1]}]}}`, "data.amount[0].numeric", "range is empty", []any{"data", "amount", 0, "numeric"}},
		{"numeric with three elements", `{"data":{"amount":[1,{"numeric":[">",5,"<"]}]}}`, "data.amount[1].numeric", "one or two comparisons", nil},
		{"numeric unknown operator", `{"n":[{"numeric":["~",5]}]}`, "n[0].numeric[0]", "operator must be", nil},
		{"numeric string operand", `{"n":[{"numeric":[">","5"]}]}`, "n[0].numeric[1]", "compares with a number", nil},
		{"numeric = with another", `{"n":[{"numeric":["=",5,"<",6]}]}`, "n[0].numeric", `"=" cannot be combined`, nil},
		{"numeric two lower bounds", `{"n":[{"numeric":[">",5,">=",6]}]}`, "n[0].numeric", "two lower bounds", nil},
		{"empty condition array", `{"source":[]}`, "source", "empty condition array", nil},
		{"empty object", `{"data":{}}`, "data", "empty object", nil},
		{"unknown operator", `{"a":[{"regex":"x"}]}`, "a[0].regex", `unknown operator "regex"`, nil},
		{"two operators in one condition", `{"a":[{"prefix":"x","suffix":"y"}]}`, "a[0]", "exactly one operator", nil},
		{"scalar instead of array", `{"a":"x"}`, "a", "must be an array", nil},
		{"nested array condition", `{"a":[["x"]]}`, "a[0]", "exactly one operator", nil},
		{"consecutive wildcard stars", `{"a":[{"wildcard":"a**"}]}`, "a[0].wildcard", "consecutive stars", nil},
		{"bad wildcard escape", `{"a":[{"wildcard":"a\\x"}]}`, "a[0].wildcard", "escapes only", nil},
		{"unfinished wildcard escape", `{"a":[{"wildcard":"a\\"}]}`, "a[0].wildcard", "unfinished escape", nil},
		{"bad cidr", `{"ip":[{"cidr":"10.0.0.0/33"}]}`, "ip[0].cidr", "cidr takes", nil},
		{"cidr without length", `{"ip":[{"cidr":"10.0.0.1"}]}`, "ip[0].cidr", "cidr takes", nil},
		{"exists not boolean", `{"a":[{"exists":"yes"}]}`, "a[0].exists", "true or false", nil},
		{"prefix number", `{"a":[{"prefix":5}]}`, "a[0].prefix", "prefix takes", nil},
		{"prefix with unknown option", `{"a":[{"prefix":{"ignore-case":"x"}}]}`, "a[0].prefix", "prefix takes", nil},
		{"anything-but boolean", `{"a":[{"anything-but":[true]}]}`, "a[0].anything-but[0]", "only strings and numbers", nil},
		{"anything-but null", `{"a":[{"anything-but":null}]}`, "a[0].anything-but", "anything-but takes", nil},
		{"anything-but empty list", `{"a":[{"anything-but":[]}]}`, "a[0].anything-but", "at least one", nil},
		{"anything-but unknown operator", `{"a":[{"anything-but":{"numeric":[">",1]}}]}`, "a[0].anything-but.numeric", "not \"numeric\"", nil},
		{"anything-but bad wildcard", `{"a":[{"anything-but":{"wildcard":"**"}}]}`, "a[0].anything-but.wildcard", "consecutive stars", nil},
		{"$or not an array", `{"$or":{"a":["x"]}}`, "$or", "non-empty array", nil},
		{"$or empty", `{"$or":[]}`, "$or", "non-empty array", nil},
		{"$or alternative not an object", `{"$or":[{"a":["x"]},"b"]}`, "$or[1]", "must be objects", nil},
		{"error inside $or", `{"$or":[{"a":["x"]},{"b":[{"exists":1}]}]}`, "$or[1].b[0].exists", "true or false", nil},
		{"odd keys are quoted", `{"data":{"a.b":[{"nope":1}]}}`, `data["a.b"][0].nope`, "unknown operator", []any{"data", "a.b", 0, "nope"}},
		{"number out of range", `{"n":[1e999]}`, "n[0]", "out of range", nil},
		{"pattern is an array", `[{"a":["x"]}]`, "", "must be a JSON object", nil},
		{"pattern is a string", `"x"`, "", "must be a JSON object", nil},
		{"pattern is a number", 5, "", "must be a JSON object", nil},
		{"invalid JSON", `{"a":[`, "", "invalid JSON", nil},
		{"duplicate key in JSON", `{"a":["x"],"a":["y"]}`, "", "duplicate key", nil},
		{"too deep", strings.Repeat(`{"a":`, MaxDepth+1) + `["x"]` + strings.Repeat(`}`, MaxDepth+1), strings.TrimSuffix(strings.Repeat("a.", MaxDepth), "."), "nested deeper", nil},
		{"too many alternatives", manyAlternatives(11), "", "more than 1024 alternatives", nil},
		{"YAML map with a non-string key", map[any]any{1: []any{"x"}}, "", "not a string", nil},
		{"YAML infinity", map[string]any{"n": []any{map[string]any{"numeric": []any{">", yamlInf()}}}}, "n[0].numeric[1]", "finite", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse(tc.pattern)
			if err == nil {
				t.Fatalf("Parse succeeded: %s", p)
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %v (%T) has no *Error", err, err)
			}
			if pe.Path != tc.path || !strings.Contains(pe.Msg, tc.msg) {
				t.Errorf("got path %q msg %q; want path %q msg containing %q", pe.Path, pe.Msg, tc.path, tc.msg)
			}
			if tc.segs != nil && !slices.Equal(pe.Segments, tc.segs) {
				t.Errorf("segments %v, want %v", pe.Segments, tc.segs)
			}
		})
	}
}

func yamlInf() float64 {
	var v map[string]float64
	if err := yaml.Unmarshal([]byte("x: .inf"), &v); err != nil {
		panic(err)
	}
	return v["x"]
}

// manyAlternatives nests $or groups of two, giving 2^n alternatives.
func manyAlternatives(n int) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"k%d":{"$or":[{"a":["x"]},{"b":["y"]}]}`, i)
	}
	b.WriteString("}")
	return b.String()
}

func TestParseReportsEveryError(t *testing.T) {
	_, err := Parse(`{"a":[],"b":[{"nope":1}],"c":{"d":[{"numeric":[">",2,"<",1]}]}}`)
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("error %v is not Errors", err)
	}
	var paths []string
	for _, e := range es {
		paths = append(paths, e.Path)
	}
	if want := []string{"a", "b[0].nope", "c.d[0].numeric"}; !slices.Equal(paths, want) {
		t.Fatalf("paths %v, want %v", paths, want)
	}
}

func TestParseLimits(t *testing.T) {
	conds := make([]any, MaxConditions+1)
	for i := range conds {
		conds[i] = i
	}
	if _, err := Parse(map[string]any{"a": conds}); err == nil || !strings.Contains(err.Error(), "match conditions") {
		t.Errorf("too many conditions: %v", err)
	}
	if _, err := Parse(map[string]any{"a": conds[:MaxConditions]}); err != nil {
		t.Errorf("MaxConditions conditions: %v", err)
	}
	if _, err := Parse(manyAlternatives(10)); err != nil {
		t.Errorf("1024 alternatives: %v", err)
	}
	deep := strings.Repeat(`{"a":`, MaxDepth) + `["x"]` + strings.Repeat(`}`, MaxDepth)
	if _, err := Parse(deep); err != nil {
		t.Errorf("MaxDepth levels: %v", err)
	}
}

// TestParseYAML reads patterns the way pipeline files give them: decoded
// by goccy/go-yaml into maps with YAML's own number types.
func TestParseYAML(t *testing.T) {
	src := `
source: [orders]
data:
  amount: [{numeric: [">", 100, "<=", 1000.5]}]
  currency: [EUR, {anything-but: [USD, 0]}]
  flags: [true, null]
  $or:
    - customer: {tier: [gold]}
    - coupon: [{exists: true}]
`
	var raw any
	if err := yaml.Unmarshal([]byte(src), &raw); err != nil {
		t.Fatal(err)
	}
	p, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"data":{"$or":[{"customer":{"tier":["gold"]}},{"coupon":[{"exists":true}]}],"amount":[{"numeric":[">",100,"<=",1000.5]}],"currency":["EUR",{"anything-but":["USD",0]}],"flags":[true,null]},"source":["orders"]}`
	if got := p.String(); got != want {
		t.Errorf("String() =\n%s\nwant\n%s", got, want)
	}
	fromJSON, err := Parse(want)
	if err != nil {
		t.Fatal(err)
	}
	if fromJSON.String() != want {
		t.Errorf("JSON round trip: %s", fromJSON.String())
	}
}
