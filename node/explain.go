package node

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/meshid/meshid/attestor"
	"github.com/meshid/meshid/identity"
)

// ExplainHandler serves GET /explain?pid=N on the admin endpoint.
func ExplainHandler(ids *identity.Manager) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pid, err := strconv.ParseInt(r.URL.Query().Get("pid"), 10, 32)
		if err != nil || pid <= 0 {
			http.Error(w, "explain: want ?pid=N with N a positive process id", http.StatusBadRequest)
			return
		}
		x, err := explainPID(r, ids, int32(pid))
		if err != nil {
			status := http.StatusInternalServerError
			if attestor.Reason(err) == attestor.ReasonExited {
				status = http.StatusNotFound
			}
			http.Error(w, "explain: "+err.Error(), status)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(x)
	})
}

func explainPID(r *http.Request, ids *identity.Manager, pid int32) (identity.Explanation, error) {
	c, err := attestor.LookupCaller(pid)
	if err != nil {
		return identity.Explanation{}, err
	}
	return ids.Explain(r.Context(), c)
}
