"""The onboarding portal: applications, officers' checks and four-eyes decisions, invitations,
firm administrators, CSR upload and certificate downloads."""
