package pattern

import (
	"slices"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

// ec2Event is EventBridge's sample EC2 state-change event (the one its
// content-filtering docs and Event Ruler's README use) as a CloudEvent: the
// envelope fields become attributes and "detail" becomes the JSON data.
func ec2Event(t *testing.T, detail map[string]any) *cloudevents.Event {
	t.Helper()
	e := cloudevents.NewEvent()
	e.SetID("ddddd4-aaaa-7777-4444-345dd43cc333")
	e.SetSource("aws.ec2")
	e.SetType("EC2 Instance State-change Notification")
	e.SetSubject("arn:aws:ec2:us-east-1:123456789012:instance/i-000000aaaaaa00000")
	e.SetTime(time.Date(2017, 10, 2, 16, 24, 49, 0, time.UTC))
	e.SetExtension("region", "us-east-1")
	e.SetExtension("account", "012345679012")
	if detail == nil {
		detail = map[string]any{
			"c-count":     5,
			"d-count":     3,
			"x-limit":     301.8,
			"source-ip":   "10.0.0.33",
			"instance-id": "i-000000aaaaaa00000",
			"state":       "running",
			"resources":   []any{"arn:aws:ec2:us-east-1:123456789012:instance/i-000000aaaaaa00000", "arn:aws:ec2:us-east-1:123456789012:volume/vol-1"},
			"service":     "EventBridgeDB",
			"FileName":    "image.PNG",
			"FilePath":    "/usr/lib/libc.so",
			"EventBusArn": "arn:aws:events:us-east-1:123456789012:event-bus/orders",
			"nothing":     nil,
			"empty":       "",
		}
	}
	if err := e.SetData(cloudevents.ApplicationJSON, detail); err != nil {
		t.Fatal(err)
	}
	return &e
}

type matchCase struct {
	name    string
	pattern string
	detail  map[string]any // nil: the sample detail
	want    bool
}

// TestEventBridgeDocumentedExamples runs the examples of EventBridge's
// "content filtering in event patterns" documentation (prefix, suffix,
// anything-but, numeric, IP address, exists, equals-ignore-case, wildcard,
// $or, arrays, null and empty string), with the results the documentation
// states, through both the automaton and the reference matcher.
func TestEventBridgeDocumentedExamples(t *testing.T) {
	cases := []matchCase{
		// Exact values; arrays in the event match if any element does.
		{"exact attribute", `{"source":["aws.ec2"],"type":["EC2 Instance State-change Notification"]}`, nil, true},
		{"exact attribute, other value", `{"source":["aws.s3"]}`, nil, false},
		{"exact is case sensitive", `{"source":["AWS.EC2"]}`, nil, false},
		{"one of several values", `{"data":{"state":["initializing","running"]}}`, nil, true},
		{"array field intersects", `{"data":{"resources":["arn:aws:ec2:us-east-1:123456789012:volume/vol-1","x"]}}`, nil, true},
		{"array field disjoint", `{"data":{"resources":["x","y"]}}`, nil, false},
		{"extension attribute", `{"region":["us-east-1"],"account":["012345679012"]}`, nil, true},
		{"null value", `{"data":{"nothing":[null]}}`, nil, true},
		{"null is not the empty string", `{"data":{"nothing":[""]}}`, nil, false},
		{"empty string", `{"data":{"empty":[""]}}`, nil, true},
		{"empty string is not null", `{"data":{"empty":[null]}}`, nil, false},
		{"missing field", `{"data":{"absent":["x"]}}`, nil, false},

		// Prefix.
		{"prefix", `{"time":[{"prefix":"2017-10-02"}]}`, nil, true},
		{"prefix, no match", `{"time":[{"prefix":"2017-10-03"}]}`, nil, false},
		{"prefix ignoring case", `{"data":{"service":[{"prefix":{"equals-ignore-case":"eventbridge"}}]}}`, nil, true},
		{"prefix is case sensitive", `{"data":{"service":[{"prefix":"eventbridge"}]}}`, nil, false},
		{"prefix only on strings", `{"data":{"c-count":[{"prefix":"5"}]}}`, nil, false},

		// Suffix.
		{"suffix", `{"data":{"FileName":[{"suffix":".PNG"}]}}`, nil, true},
		{"suffix is case sensitive", `{"data":{"FileName":[{"suffix":".png"}]}}`, nil, false},
		{"suffix ignoring case", `{"data":{"FileName":[{"suffix":{"equals-ignore-case":".png"}}]}}`, nil, true},

		// Anything-but.
		{"anything-but string", `{"data":{"state":[{"anything-but":"initializing"}]}}`, nil, true},
		{"anything-but the value", `{"data":{"state":[{"anything-but":"running"}]}}`, nil, false},
		{"anything-but number", `{"data":{"x-limit":[{"anything-but":123}]}}`, nil, true},
		{"anything-but string list", `{"data":{"state":[{"anything-but":["stopped","overloaded"]}]}}`, nil, true},
		{"anything-but list containing the value", `{"data":{"state":[{"anything-but":["stopped","running"]}]}}`, nil, false},
		{"anything-but number list", `{"data":{"x-limit":[{"anything-but":[100,200,300]}]}}`, nil, true},
		{"anything-but number list containing the value", `{"data":{"x-limit":[{"anything-but":[100,301.8]}]}}`, nil, false},
		{"anything-but prefix", `{"data":{"state":[{"anything-but":{"prefix":"init"}}]}}`, nil, true},
		{"anything-but prefix of the value", `{"data":{"state":[{"anything-but":{"prefix":"run"}}]}}`, nil, false},
		{"anything-but suffix", `{"data":{"FileName":[{"anything-but":{"suffix":".txt"}}]}}`, nil, true},
		{"anything-but suffix of the value", `{"data":{"FileName":[{"anything-but":{"suffix":".PNG"}}]}}`, nil, false},
		{"anything-but ignoring case", `{"data":{"state":[{"anything-but":{"equals-ignore-case":["Stopped","OverLoaded"]}}]}}`, nil, true},
		{"anything-but ignoring case, excluded", `{"data":{"state":[{"anything-but":{"equals-ignore-case":["RUNNING"]}}]}}`, nil, false},
		{"anything-but wildcard", `{"data":{"FilePath":[{"anything-but":{"wildcard":"*/bin/*"}}]}}`, nil, true},
		{"anything-but wildcard, excluded", `{"data":{"FilePath":[{"anything-but":{"wildcard":"*/lib/*"}}]}}`, nil, false},
		{"anything-but needs the field", `{"data":{"absent":[{"anything-but":"x"}]}}`, nil, false},

		// Numeric (only JSON numbers; equality is numeric).
		{"numeric ranges", `{"data":{"c-count":[{"numeric":[">",0,"<=",5]}],"d-count":[{"numeric":["<",10]}],"x-limit":[{"numeric":["=",3.018e2]}]}}`, nil, true},
		{"numeric open bound excludes", `{"data":{"c-count":[{"numeric":[">",0,"<",5]}]}}`, nil, false},
		{"numeric lower bound", `{"data":{"c-count":[{"numeric":[">=",5]}]}}`, nil, true},
		{"numeric on a string", `{"data":{"state":[{"numeric":[">",0]}]}}`, nil, false},
		{"exact number, other spelling", `{"data":{"c-count":[5.0]}}`, nil, true},
		{"exact number is not a string", `{"data":{"c-count":["5"]}}`, nil, false},

		// IP address.
		{"cidr", `{"data":{"source-ip":[{"cidr":"10.0.0.0/24"}]}}`, nil, true},
		{"cidr, outside", `{"data":{"source-ip":[{"cidr":"10.0.1.0/24"}]}}`, nil, false},
		{"cidr IPv6", `{"data":{"ip":[{"cidr":"2001:db8::/32"}]}}`, map[string]any{"ip": "2001:db8::1"}, true},

		// Exists (leaf nodes only).
		{"exists true", `{"data":{"state":[{"exists":true}]}}`, nil, true},
		{"exists true, missing", `{"data":{"c-count-2":[{"exists":true}]}}`, nil, false},
		{"exists false, missing", `{"data":{"c-count-2":[{"exists":false}]}}`, nil, true},
		{"exists false, present", `{"data":{"c-count":[{"exists":false}]}}`, nil, false},
		{"exists false on an object is true (not a leaf)", `{"data":{"c-count":[{"exists":false}]}}`, map[string]any{"state": "running", "c-count": map[string]any{"c1": 100}}, true},
		{"exists true on an object is false (not a leaf)", `{"data":{"c-count":[{"exists":true}]}}`, map[string]any{"c-count": map[string]any{"c1": 100}}, false},
		{"exists true on null", `{"data":{"nothing":[{"exists":true}]}}`, nil, true},
		{"exists false on an empty array", `{"data":{"list":[{"exists":false}]}}`, map[string]any{"list": []any{}}, true},
		{"exists true on an empty array", `{"data":{"list":[{"exists":true}]}}`, map[string]any{"list": []any{}}, false},

		// Equals-ignore-case.
		{"equals-ignore-case", `{"type":[{"equals-ignore-case":"ec2 instance state-change notification"}]}`, nil, true},
		{"equals-ignore-case, other value", `{"type":[{"equals-ignore-case":"ec2 instance state change"}]}`, nil, false},

		// Wildcard.
		{"wildcard", `{"data":{"EventBusArn":[{"wildcard":"arn:aws:events:us-east-1:*:event-bus/*"}]}}`, nil, true},
		{"wildcard, no match", `{"data":{"EventBusArn":[{"wildcard":"arn:aws:events:us-west-2:*:event-bus/*"}]}}`, nil, false},
		{"wildcard in the middle", `{"data":{"FilePath":[{"wildcard":"/usr/*/libc.so"}]}}`, nil, true},
		{"wildcard escaped star", `{"data":{"name":[{"wildcard":"a\\*b*"}]}}`, map[string]any{"name": "a*bc"}, true},
		{"wildcard escaped star is literal", `{"data":{"name":[{"wildcard":"a\\*b*"}]}}`, map[string]any{"name": "axbc"}, false},

		// $or.
		{"$or across fields", `{"$or":[{"data":{"c-count":[{"numeric":[">",0,"<=",5]}]}},{"data":{"d-count":[{"numeric":["<",1]}]}}]}`, nil, true},
		{"$or, no alternative", `{"$or":[{"data":{"c-count":[{"numeric":[">",5]}]}},{"data":{"d-count":[{"numeric":["<",1]}]}}]}`, nil, false},
		{"$or with AND beside it", `{"source":["aws.ec2"],"$or":[{"data":{"state":["stopped"]}},{"region":["us-east-1"]}]}`, nil, true},
		{"$or inside data", `{"data":{"$or":[{"state":["stopped"]},{"x-limit":[301.8]}]}}`, nil, true},
		{"$or nested", `{"source":["aws.ec2"],"$or":[{"data":{"state":["x"]}},{"data":{"c-count":[5],"$or":[{"d-count":[4]},{"service":[{"prefix":"Event"}]}]}}]}`, nil, true},
	}
	runMatchCases(t, cases)
}

// TestSemantics pins the choices the EventBridge docs leave open.
func TestSemantics(t *testing.T) {
	employees := map[string]any{"employees": []any{
		map[string]any{"firstName": "John", "lastName": "Doe"},
		map[string]any{"firstName": "Anna", "lastName": "Smith"},
		map[string]any{"firstName": "Peter", "lastName": "Jones"},
	}}
	nested := map[string]any{"employees": []any{
		[]any{map[string]any{"firstName": "John", "lastName": "Doe"}, map[string]any{"firstName": "Anna", "lastName": "Smith"}},
		[]any{map[string]any{"firstName": "Peter", "lastName": "Jones"}},
	}}
	cases := []matchCase{
		// Array consistency (Event Ruler's rulesForJSONEvent): the fields of
		// one object pattern must come from the same array element.
		{"array element", `{"data":{"employees":{"firstName":["Anna"]}}}`, employees, true},
		{"same element", `{"data":{"employees":{"firstName":["Anna"],"lastName":["Smith"]}}}`, employees, true},
		{"different elements", `{"data":{"employees":{"firstName":["Anna"],"lastName":["Jones"]}}}`, employees, false},
		{"nested arrays, same element", `{"data":{"employees":{"firstName":["Peter"],"lastName":["Jones"]}}}`, nested, true},
		{"nested arrays, different elements", `{"data":{"employees":{"firstName":["John"],"lastName":["Jones"]}}}`, nested, false},
		{"exists false is global, not per element", `{"data":{"employees":{"firstName":["Anna"],"middleName":[{"exists":false}]}}}`, employees, true},
		{"exists false sees every element", `{"data":{"employees":{"lastName":[{"exists":false}]}}}`, employees, false},
		{"$or merges with the object beside it", `{"data":{"employees":{"firstName":["Anna"]}},"$or":[{"data":{"employees":{"lastName":["Jones"]}}},{"source":["x"]}]}`, employees, false},
		{"anything-but on an array: some element", `{"data":{"tags":[{"anything-but":"x"}]}}`, map[string]any{"tags": []any{"x", "y"}}, true},
		{"anything-but on an array: every element excluded", `{"data":{"tags":[{"anything-but":"x"}]}}`, map[string]any{"tags": []any{"x", "x"}}, false},
		{"anything-but string matches a number", `{"data":{"n":[{"anything-but":"x"}]}}`, map[string]any{"n": 5}, true},
		{"anything-but prefix matches a number", `{"data":{"n":[{"anything-but":{"prefix":"x"}}]}}`, map[string]any{"n": 5}, true},
		{"value or missing: value", `{"data":{"state":["on",{"exists":false}]}}`, map[string]any{"state": "on"}, true},
		{"value or missing: missing", `{"data":{"state":["on",{"exists":false}]}}`, map[string]any{"other": 1}, true},
		{"value or missing: other value", `{"data":{"state":["on",{"exists":false}]}}`, map[string]any{"state": "off"}, false},
		{"two conditions on one path from $or must both hold", `{"data":{"s":[{"prefix":"a"}]},"$or":[{"data":{"s":[{"suffix":"z"}]}}]}`, map[string]any{"s": "abz"}, true},
		{"two conditions on one path from $or, one fails", `{"data":{"s":[{"prefix":"a"}]},"$or":[{"data":{"s":[{"suffix":"y"}]}}]}`, map[string]any{"s": "abz"}, false},
		{"numbers are numbers: 300 = 3e2 = 300.0", `{"data":{"n":[3e2]}}`, map[string]any{"n": 300.0}, true},
		{"numeric equality", `{"data":{"n":[{"numeric":["=",300]}]}}`, map[string]any{"n": 300}, true},
		{"booleans", `{"data":{"b":[true]}}`, map[string]any{"b": true}, true},
		{"boolean is not a string", `{"data":{"b":["true"]}}`, map[string]any{"b": true}, false},
		{"dots in keys are not path separators", `{"data":{"a.b":["x"]}}`, map[string]any{"a": map[string]any{"b": "x"}}, false},
		{"dotted key", `{"data":{"a.b":["x"]}}`, map[string]any{"a.b": "x"}, true},
		{"equals-ignore-case is Unicode-aware", `{"data":{"s":[{"equals-ignore-case":"STRASSE ÄÖ"}]}}`, map[string]any{"s": "strasse äö"}, true},
		{"Kelvin sign folds with k", `{"data":{"s":[{"prefix":{"equals-ignore-case":"k"}}]}}`, map[string]any{"s": "\u212aelvin"}, true},
		{"IPv4-mapped IPv6 in an IPv4 block", `{"data":{"ip":[{"cidr":"10.0.0.0/8"}]}}`, map[string]any{"ip": "::ffff:10.1.2.3"}, true},
		{"cidr on a non-address", `{"data":{"ip":[{"cidr":"10.0.0.0/8"}]}}`, map[string]any{"ip": "ten"}, false},
		{"a condition on an object never matches", `{"data":["plain"]}`, nil, false},
	}
	runMatchCases(t, cases)
}

func runMatchCases(t *testing.T, cases []matchCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse(tc.pattern)
			if err != nil {
				t.Fatalf("Parse(%s): %v", tc.pattern, err)
			}
			e := ec2Event(t, tc.detail)
			b := NewBuilder()
			if err := b.Add("r", p); err != nil {
				t.Fatal(err)
			}
			got := slices.Equal(b.Build().Match(e), []string{"r"})
			if got != tc.want {
				t.Errorf("Match = %v, want %v", got, tc.want)
			}
			if ref := ReferenceMatch(p, e); ref != tc.want {
				t.Errorf("ReferenceMatch = %v, want %v", ref, tc.want)
			}
		})
	}
}

// TestEventView pins what the patterns see of a CloudEvent.
func TestEventView(t *testing.T) {
	e := cloudevents.NewEvent()
	e.SetID("1")
	e.SetSource("/s")
	e.SetType("t")
	e.SetTime(time.Date(2024, 5, 6, 7, 8, 9, 500, time.FixedZone("x", 3600)))
	e.SetExtension("attempt", 3)
	e.SetExtension("replayed", true)
	e.SetExtension("data", "ignored")
	cases := []struct {
		name    string
		ct      string
		data    string
		pattern string
		want    bool
	}{
		{"integer extension is a number", "", "", `{"attempt":[{"numeric":[">",2]}]}`, true},
		{"boolean extension is a boolean", "", "", `{"replayed":[true]}`, true},
		{"time is RFC 3339 in UTC", "", "", `{"time":["2024-05-06T06:08:09.0000005Z"]}`, true},
		{"specversion is an attribute", "", "", `{"specversion":["1.0"]}`, true},
		{"an extension named data is ignored", "", "", `{"data":[{"exists":false}]}`, true},
		{"JSON data", "application/json", `{"a":1}`, `{"data":{"a":[1]}}`, true},
		{"+json data", "application/cloudevents+json; charset=utf-8", `{"a":1}`, `{"data":{"a":[1]}}`, true},
		{"no content type, JSON data", "", `{"a":1}`, `{"data":{"a":[1]}}`, true},
		{"no content type, other data", "", `a=1`, `{"data":[{"exists":false}]}`, true},
		{"text data is absent", "text/plain", `{"a":1}`, `{"data":{"a":[{"exists":false}]}}`, true},
		{"invalid JSON data is absent", "application/json", `{"a":1,}`, `{"data":{"a":[{"exists":false}]}}`, true},
		{"duplicate keys make data invalid", "application/json", `{"a":1,"a":2}`, `{"data":{"a":[{"exists":false}]}}`, true},
		{"attributes still match when data is invalid", "application/json", `{`, `{"type":["t"]}`, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev := e.Clone()
			ev.SetDataContentType(tc.ct)
			ev.DataEncoded = []byte(tc.data)
			p, err := Parse(tc.pattern)
			if err != nil {
				t.Fatal(err)
			}
			b := NewBuilder()
			_ = b.Add("r", p)
			if got := len(b.Build().Match(&ev)) == 1; got != tc.want {
				t.Errorf("Match = %v, want %v", got, tc.want)
			}
			if got := ReferenceMatch(p, &ev); got != tc.want {
				t.Errorf("ReferenceMatch = %v, want %v", got, tc.want)
			}
		})
	}
}
