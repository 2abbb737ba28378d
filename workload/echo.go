package workload

// What a caller sends is repeated in errors only in part (see
// internal/echo): a request may carry megabytes, and meshid would hand them
// back to be logged. maxEcho bounds an audience or a SPIFFE ID;
// maxEchoDetail a message of go-spiffe's, which quotes the audiences it
// compared.
const (
	maxEcho       = 256
	maxEchoDetail = 1024
)
