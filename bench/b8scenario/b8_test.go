package b8scenario

import (
	"encoding/json"
	"testing"
)

func TestReportFromProgramOutput(t *testing.T) {
	raw := `{"params":{"runs":3},"results":[{"rules":1,"matcherEventsPerCPUSecond":{"median":800000,"min":790000,"max":810000},
	"loopEventsPerCPUSecond":{"median":29000,"min":28000,"max":30000},"speedUpOverLoop":27.6,"rulesMatchedPerEvent":0}],
	"bars":{"throughput 10000 rules / 1 rule":{"value":0.37,"bar":0.5,"pass":false},"speed-up over the loop at 10000 rules":{"value":5073,"bar":20,"pass":true}}}`
	var o output
	if err := json.Unmarshal([]byte(raw), &o); err != nil {
		t.Fatal(err)
	}
	r := report(o)
	if len(r.Tables) != 1 || len(r.Tables[0].Rows) != 1 || r.Tables[0].Rows[0][1] != "800000 (790000–810000)" {
		t.Fatalf("table = %+v", r.Tables)
	}
	if len(r.Bars) != 2 || r.Bars[0].Name != "B8: speed-up over the loop at 10000 rules" || r.Bars[1].Got != "0.37" {
		t.Fatalf("bars = %+v", r.Bars)
	}
	if r.Bars[0].Status == r.Bars[1].Status {
		t.Fatalf("a met and a missed bar share status %q", r.Bars[0].Status)
	}
}
