/* Everything tandem-transport calls: the UCP API and its status codes. */
#include <ucp/api/ucp.h>
#include <ucs/type/status.h>
