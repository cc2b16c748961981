package async

import (
	"os"
	"path/filepath"
	"time"
)

// reconcileFile, in Config.StateDir, keeps the reconciler's progress.
const reconcileFile = "async-reconciled"

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
