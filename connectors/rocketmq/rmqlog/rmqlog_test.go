package rmqlog

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestAdapterLevelsAndFields(t *testing.T) {
	var buf bytes.Buffer
	a := adapter{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	a.Debug("debug line", nil)
	a.Info("info line", map[string]interface{}{"k": 1})
	a.Warning("warning line", map[string]interface{}{"underlayError": errors.New("boom"), "broker": "b:1"})
	a.Error("error line", nil)
	a.Fatal("fatal line", nil) // must not exit
	a.Warning("processQueue is dropped without process consume result.", nil)
	out := buf.String()
	for _, absent := range []string{"debug line", "info line", "processQueue"} {
		if strings.Contains(out, absent) {
			t.Errorf("%q logged at Info: %s", absent, out)
		}
	}
	for _, want := range []string{
		`level=INFO msg="warning line" broker=b:1 underlayError=boom`,
		`level=WARN msg="error line"`,
		`level=WARN msg="fatal line"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
