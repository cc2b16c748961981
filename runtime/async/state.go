package async

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Files in Config.StateDir.
const (
	pausedFile    = "async-paused.json"
	reconcileFile = "async-reconciled"
)

// pauseFlags are the paused functions, persisted in the state directory so
// that a paused function stays paused across restarts. Safe for
// concurrent use.
type pauseFlags struct {
	path string // "" keeps the flags in memory only

	mu     sync.Mutex
	paused map[string]bool // fnKey.String() → paused
}

func loadPauseFlags(dir string) (*pauseFlags, error) {
	p := &pauseFlags{paused: map[string]bool{}}
	if dir == "" {
		return p, nil
	}
	p.path = filepath.Join(dir, pausedFile)
	b, err := os.ReadFile(p.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return p, nil
	case err != nil:
		return nil, fmt.Errorf("async: read pause flags: %w", err)
	}
	if err := json.Unmarshal(b, &p.paused); err != nil {
		return nil, fmt.Errorf("async: %s: %w", p.path, err)
	}
	return p, nil
}

func (p *pauseFlags) get(k fnKey) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused[k.String()]
}

// set records k's flag and persists the set before returning.
func (p *pauseFlags) set(k fnKey, paused bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if paused {
		p.paused[k.String()] = true
	} else {
		delete(p.paused, k.String())
	}
	if p.path == "" {
		return nil
	}
	b, err := json.Marshal(p.paused)
	if err != nil {
		return err
	}
	return writeFileAtomic(p.path, b)
}

// writeFileAtomic replaces path with data: a crash leaves the old or the
// new content, never a mix.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// readReconciled returns the reconciler's persisted progress: the upper
// bound of its last pass (zero if none).
func readReconciled(dir string) time.Time {
	if dir == "" {
		return time.Time{}
	}
	b, err := os.ReadFile(filepath.Join(dir, reconcileFile))
	if err != nil {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, string(b))
	if err != nil {
		return time.Time{}
	}
	return t
}

func writeReconciled(dir string, t time.Time) error {
	if dir == "" {
		return nil
	}
	return writeFileAtomic(filepath.Join(dir, reconcileFile), []byte(t.UTC().Format(time.RFC3339Nano)))
}
