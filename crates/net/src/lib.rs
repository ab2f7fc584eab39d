//! Container networking: bridges, veth, IPAM, NAT, published ports, embedded DNS.
