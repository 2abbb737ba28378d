package bundles

import "time"

// Status is one bundle's state, as `meshid status` shows it. Its JSON
// names are part of the status contract (docs/cli.md): add, never rename.
type Status struct {
	Name     string `json:"name"`
	URL      string `json:"url"`
	Resource string `json:"resource"`
	// Active says a copy of the bundle is in the policy set in use (or,
	// while other bundles have none yet, would be).
	Active   bool   `json:"active"`
	Revision string `json:"revision"` // the active copy's manifest revision
	ETag     string `json:"etag"`     // the active copy's ETag
	// FromDisk says the active copy is the one kept in data_dir, read at
	// start; a download replaces it.
	FromDisk       bool      `json:"from_disk"`
	LastDownload   time.Time `json:"last_download,omitzero"`   // a bundle came (activated or not)
	LastActivation time.Time `json:"last_activation,omitzero"` // the active copy was activated
	LastSuccess    time.Time `json:"last_success,omitzero"`    // a poll ended well: activated, or 304
	LastFailure    *Failure  `json:"last_failure,omitempty"`
}

// Failure is the last thing that went wrong with a bundle.
type Failure struct {
	At     time.Time `json:"at"`
	Reason string    `json:"reason"` // download, verify, compile, persist
	Error  string    `json:"error"`
}
