"""RFQ domain models: RFQs, legs, quotes and trades (built in the RFQ API issue)."""
