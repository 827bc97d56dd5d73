"""The card service of eportd: state, operations and the gRPC servicer."""
