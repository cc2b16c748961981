package harness

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Result is the JSON document written for one scenario run.
type Result struct {
	Scenario string    `json:"scenario"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Machine  Machine   `json:"machine"`
	// Args are the bench's command-line arguments.
	Args   []string `json:"args"`
	Report *Report  `json:"report,omitempty"`
	// Error is set when the scenario could not complete.
	Error string `json:"error,omitempty"`
}

// Stamp is the timestamp format of result file names.
const Stamp = "20060102-150405"

// WriteResult writes r to dir/<scenario>-<started>.json and returns the path.
func WriteResult(dir string, r Result) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("results dir: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode result: %w", err)
	}
	path := filepath.Join(dir, r.Scenario+"-"+r.Started.Format(Stamp)+".json")
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return "", fmt.Errorf("write result: %w", err)
	}
	return path, nil
}
